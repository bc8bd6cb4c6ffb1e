"""What replicas print is scrubbed before Flotilla keeps or shows it; cache passwords are letters and digits.

Issue 13, break 4: a cache password with a space made redis-server echo its config line, and
that line (password included) reached ``up``, ``flotilla events``, ``state.db`` and the daemon's
log. Here: the pure ``scrub``, the event log that applies it to every message, a crash report
on the in-memory engine, and the password rule where a secret is set and at ``up``.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flotilla.daemon.events import WITHHELD, EventLog
from flotilla.daemon.injection import SecretInjector, cache_password_problem, check_cache_password
from flotilla.daemon.store import Store
from flotilla.errors import BadRequestError, SpecError
from flotilla.secrets import Vault, generate_key
from flotilla.secrets.injection import SecretsRuntime
from flotilla.secrets.scrub import MARKER, scrub, strip_controls
from flotilla.spec import spec_from_dict
from tests.support.memory_engine import MemoryEngine

ESC = "\x1b"
PASSWORD = "hunter2 with spaces"


@pytest.mark.parametrize(("raw", "shown"), [
    (f"{ESC}[31mred{ESC}[0m", "red"),
    (f"{ESC}]0;owned title\x07after", "after"),
    (f"{ESC}]8;;http://x{ESC}\\link{ESC}]8;;{ESC}\\", "link"),
    (f"a{ESC}cb", "ab"),
    ("a\x9b2Jb", "ab"),
    ("a\rb\nc\td", "a b c d"),
    ("nul\0bell\x07del\x7f", "nulbelldel"),
    ("rtl\u202eevil", "rtlevil"),
    ("plain: ünïcode ✓", "plain: ünïcode ✓"),
])
def test_terminal_codes_and_controls_are_removed(raw: str, shown: str) -> None:
    assert strip_controls(raw) == shown


def test_every_secret_is_replaced_even_split_by_an_escape_or_across_lines() -> None:
    key = b"-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----\n"
    text = f"requirepass hun{ESC}[0mter2 | {PASSWORD} | AAAABBBBCCCC | ok"
    cleaned = scrub(text, [b"hunter2", PASSWORD.encode(), key])
    assert "hunter2" not in cleaned and "AAAABBBB" not in cleaned and ESC not in cleaned
    assert cleaned == f"requirepass {MARKER} | {MARKER} | {MARKER} | ok"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20).filter(lambda s: strip_controls(s).strip()),
       st.text(max_size=20), st.text(max_size=20))
def test_no_secret_and_no_control_survives(secret: str, before: str, after: str) -> None:
    cleaned = scrub(before + secret + after, [secret.encode()])
    assert strip_controls(secret).strip() not in cleaned.replace(MARKER, "\0")  # the marker may hold it
    assert not any(ch < " " or ch == "\x7f" or "\x80" <= ch <= "\x9f" for ch in cleaned)


# -- the event log: the one door into events, state.db and the daemon's log -------------------

def test_the_event_log_scrubs_what_it_stores_and_logs(tmp_path, caplog) -> None:
    store = Store(tmp_path / "state.db", clock=lambda: 1.0)
    events = EventLog(store, secret_values=lambda app: [PASSWORD.encode()] if app == "shop" else [])
    with caplog.at_level(logging.INFO, logger="flotilla.events"):
        events.record("shop", "crash", f"web-1{ESC}[2J", f"last output: requirepass {PASSWORD}{ESC}[31m")
    (event,) = store.events("shop")
    assert event.message == f"last output: requirepass {MARKER}" and event.subject == "web-1"
    assert PASSWORD not in caplog.text and ESC not in caplog.text
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert PASSWORD.encode() not in raw and f"{ESC}[".encode() not in raw


def test_an_event_that_cannot_be_scrubbed_is_withheld(tmp_path) -> None:
    def broken(app: str):
        raise RuntimeError("vault locked")

    store = Store(tmp_path / "state.db", clock=lambda: 1.0)
    EventLog(store, secret_values=broken).record("shop", "crash", "web-1", f"output {PASSWORD}")
    assert [e.message for e in store.events("shop")] == [WITHHELD]


def test_a_crash_report_holds_neither_the_secret_nor_escapes(tmp_path) -> None:
    from tests.unit.test_reconciler import Clock, Daemon, spec

    daemon = Daemon(tmp_path / "state.db", MemoryEngine(), Clock())
    daemon.reconciler._events = EventLog(daemon.store, secret_values=lambda app: [PASSWORD.encode()])
    daemon.up(spec())
    (replica,) = daemon.engine.running("shop", "web")
    daemon.engine.exit(replica.container_id, code=1, output=f"{ESC}[1mFatal{ESC}[0m\nbad line: {PASSWORD}")
    daemon.reconcile()
    (message,) = daemon.events("crash")
    assert message.endswith(f"last output: Fatal | bad line: {MARKER}")


# -- the cache password rule ------------------------------------------------------------------

@pytest.mark.parametrize("value", [b"pass word", b"abc\n", b"p'q", b"p\"q", b"a-b", b"\xc3\xa9t\xc3\xa9", b"a\0"])
def test_a_cache_password_that_is_not_letters_and_digits_is_refused_when_set(value: bytes) -> None:
    with pytest.raises(BadRequestError, match="letters and digits only") as caught:
        check_cache_password("shop", "sessions-redis-password", value)
    assert value.decode(errors="replace").strip() not in caught.value.message.split(";")[0]


def test_other_secrets_and_good_passwords_are_fine() -> None:
    assert cache_password_problem("db-password", b"any thing\n") is None
    assert cache_password_problem("sessions-redis-password", b"Abc123xyz") is None


CACHE_SPEC = {"app": "shop", "services": {"web": {"image": "x", "caches": ["sessions"]}},
              "caches": {"sessions": {"type": "redis-cluster"}}}


def test_up_refuses_a_stored_cache_password_that_breaks_the_rule(tmp_path) -> None:
    vault = Vault(tmp_path / "vault.db", generate_key(), clock=lambda: 1.0)
    runtime = SecretsRuntime(home=tmp_path, shared_root=tmp_path / "ram")
    injector = SecretInjector(vault=vault, runtime=runtime, engine=MemoryEngine(), keys=None)
    spec = spec_from_dict(CACHE_SPEC)
    injector.check(spec, generated={"sessions-redis-password"})  # not set yet: generated, fine
    vault.set("shop", "sessions-redis-password", PASSWORD.encode())  # set before the rule was enforced
    with pytest.raises(SpecError) as caught:
        injector.check(spec, generated={"sessions-redis-password"})
    (problem,) = caught.value.problems
    assert problem.path == "caches.sessions" and "not ASCII letters or digits" in problem.message
    assert PASSWORD not in str(problem)
