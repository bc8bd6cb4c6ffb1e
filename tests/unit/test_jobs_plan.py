"""The scheduled-job planner (plan/jobs.py): no doubled run, concurrency, missed runs, timeouts.

A small simulation drives it as the daemon's loop does: ticks at uneven
intervals, sometimes a long gap (the daemon was down), runs that last a random
while; starting a run moves the job's cursor to its schedule time, as the
daemon's store does.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.plan.jobs import ON_TIME, RunInFlight, plan_jobs
from flotilla.spec.models import JobSpec

EVERY_10S = "* * * * * */10"


def job(**changes) -> JobSpec:
    return JobSpec(schedule=EVERY_10S, service="web", **changes)


def simulate(spec: JobSpec, *, gaps: list[float], lengths: list[float], start: float = 1000.0):
    """Drive the planner; returns (starts as (due, at), skips, stops as (due, at, reason), max alive at once)."""
    now, cursor = start, start
    running: list[RunInFlight] = []
    ends: dict[str, float] = {}
    starts, skips, stops, most = [], [], [], 0
    for number, gap in enumerate(gaps):
        now += gap
        running = [r for r in running if ends[r.container_id] > now]  # finished runs are recorded and gone
        for action in plan_jobs(jobs={"j": spec}, cursors={"j": cursor}, running=running, now=now):
            if action.kind == "start":
                cid = f"c{number}-{action.due}"
                ends[cid] = now + lengths[number % len(lengths)]
                running.append(RunInFlight("j", action.due, now, cid))
                starts.append((action.due, now))
                cursor = action.due
            elif action.kind == "skip":
                skips.append(action.due)
                cursor = action.due
            else:
                stops.append((action.due, now, action.reason))
                running = [r for r in running if r.container_id != action.container_id]
        most = max(most, len(running))
    return starts, skips, stops, most


gaps = st.lists(st.one_of(st.floats(min_value=0.05, max_value=1.0), st.floats(min_value=1, max_value=120)),
                min_size=1, max_size=150)
lengths = st.lists(st.floats(min_value=0.1, max_value=40), min_size=1, max_size=5)
policies = st.sampled_from(["forbid", "allow", "replace"])
missed = st.sampled_from(["run_once", "skip"])


@settings(max_examples=200, deadline=None)
@given(gaps, lengths, policies, missed)
def test_no_schedule_time_is_started_twice(gap_list, length_list, concurrency, missed_policy):
    starts, skips, _, _ = simulate(job(concurrency=concurrency, missed=missed_policy), gaps=gap_list,
                                   lengths=length_list)
    dues = [due for due, _ in starts]
    assert len(dues + skips) == len(set(dues + skips))
    assert dues == sorted(dues) and skips == sorted(skips)  # decisions move forward in time only


@settings(max_examples=200, deadline=None)
@given(gaps, lengths, st.sampled_from(["forbid", "replace"]), missed)
def test_forbid_and_replace_never_run_two_at_once(gap_list, length_list, concurrency, missed_policy):
    *_, most = simulate(job(concurrency=concurrency, missed=missed_policy), gaps=gap_list, lengths=length_list)
    assert most <= 1


@settings(max_examples=200, deadline=None)
@given(gaps, lengths, policies)
def test_missed_skip_never_starts_a_late_run(gap_list, length_list, concurrency):
    starts, *_ = simulate(job(concurrency=concurrency, missed="skip"), gaps=gap_list, lengths=length_list)
    assert all(at - due <= ON_TIME for due, at in starts)


@settings(max_examples=200, deadline=None)
@given(gaps, lengths, policies, missed)
def test_a_run_never_outlives_its_timeout_by_more_than_a_tick(gap_list, length_list, concurrency, missed_policy):
    spec = job(concurrency=concurrency, missed=missed_policy, timeout=15.0)
    starts, _, stops, _ = simulate(spec, gaps=gap_list, lengths=length_list)
    started = dict(starts)
    for due, at, reason in stops:
        if reason.startswith("timed out"):
            assert at - started[due] >= 15.0


def test_a_tick_every_second_starts_every_schedule_time_once_on_time():
    starts, skips, _, _ = simulate(job(), gaps=[1.0] * 60, lengths=[0.5])
    assert [due for due, _ in starts] == [1010.0 + 10 * i for i in range(6)]
    assert all(at - due < 1.0 for due, at in starts) and not skips


def test_a_run_longer_than_the_period_is_not_doubled_under_forbid():
    starts, skips, _, most = simulate(job(), gaps=[1.0] * 60, lengths=[25.0])
    assert most == 1
    assert [due for due, _ in starts] == [1010.0, 1040.0]  # 1020 and 1030 fall while the first runs
    assert skips == [1020.0, 1030.0, 1050.0, 1060.0]


def test_allow_overlaps_and_replace_stops_the_old_run():
    *_, most = simulate(job(concurrency="allow"), gaps=[1.0] * 60, lengths=[25.0])
    assert most == 3
    starts, _, stops, most = simulate(job(concurrency="replace"), gaps=[1.0] * 60, lengths=[25.0])
    assert most == 1 and len(starts) == 6 and len(stops) == 5
    assert "concurrency: replace" in stops[0][2]


def test_runs_missed_while_down_run_once_by_default():
    spec = JobSpec(schedule="* * * * *", service="web")
    assert spec.missed == "run_once"
    actions = plan_jobs(jobs={"j": spec}, cursors={"j": 0.0}, running=[], now=645.0)
    assert [(a.kind, a.due) for a in actions] == [("start", 600.0)]
    assert "10 runs missed" in actions[0].reason and "run_once" in actions[0].reason
    skipping = spec.model_copy(update={"missed": "skip"})
    skipped = plan_jobs(jobs={"j": skipping}, cursors={"j": 0.0}, running=[], now=645.0)
    assert [(a.kind, a.due) for a in skipped] == [("skip", 600.0)]
    on_time = plan_jobs(jobs={"j": skipping}, cursors={"j": 0.0}, running=[], now=605.0)
    assert [(a.kind, a.due) for a in on_time] == [("start", 600.0)]  # skip drops the missed, not the current
    assert "earlier runs were missed" in on_time[0].reason


def test_a_short_outage_is_not_a_miss():
    actions = plan_jobs(jobs={"j": job(missed="skip")}, cursors={"j": 1000.0}, running=[], now=1015.0)
    assert [(a.kind, a.due) for a in actions] == [("start", 1010.0)]


def test_a_new_job_waits_for_its_cursor_and_a_stopping_run_is_not_stopped_again():
    assert plan_jobs(jobs={"j": job()}, cursors={}, running=[], now=1095.0) == ()
    stopping = RunInFlight("j", 1000.0, 1000.0, "c", stopping=True)
    actions = plan_jobs(jobs={"j": job(timeout=5.0)}, cursors={"j": 1090.0}, running=[stopping], now=1095.0)
    assert actions == ()
