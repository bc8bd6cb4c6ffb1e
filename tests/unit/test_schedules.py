"""Cron schedules (spec/schedules.py): validation messages and fire times, read in UTC."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flotilla.spec.schedules import has_seconds, last_fire, next_fire, schedule_problem

DAY = 86400.0


def test_valid_schedules_have_no_problem():
    for text in ["* * * * *", "*/15 * * * *", "0 3 * * 1-5", "* * * * * */10", "@daily", "@HOURLY"]:
        assert schedule_problem(text) is None, text


def test_invalid_schedules_say_what_is_wrong():
    assert "3 fields" in schedule_problem("* * *")
    assert "out of range" in schedule_problem("61 * * * *")
    assert "7 fields" in schedule_problem("* * * * * * 2030")
    assert "non-empty" in schedule_problem("")
    assert "non-empty" in schedule_problem(5)
    assert "not a valid" in schedule_problem("H * * * *")


def test_next_and_last_fire_in_utc():
    assert next_fire("0 3 * * *", after=0.0) == 3 * 3600.0
    assert next_fire("0 3 * * *", after=3 * 3600.0) == DAY + 3 * 3600.0
    assert last_fire("0 3 * * *", at=3 * 3600.0) == 3 * 3600.0
    assert last_fire("0 3 * * *", at=3 * 3600.0 - 0.5) == 3 * 3600.0 - DAY


def test_a_sixth_field_is_seconds():
    assert has_seconds("* * * * * */10") and not has_seconds("* * * * *")
    assert next_fire("* * * * * */10", after=100.5) == 110.0


@given(st.floats(min_value=0, max_value=4e9), st.sampled_from(["* * * * *", "*/7 * * * *", "0 0 * * 0",
                                                               "* * * * * */5", "@hourly"]))
def test_last_fire_is_at_or_before_and_next_after(moment, schedule):
    last = last_fire(schedule, at=moment)
    nxt = next_fire(schedule, after=moment)
    assert last <= moment < nxt
    assert next_fire(schedule, after=last) == nxt  # no fire between the two
