#!/usr/bin/env bash
# Runs Flotilla's whole test suite on any machine, bare or ready: CI's entry
# point (.ci/run) and a developer's.
#
# Why it exists: the integration tests need Docker Engine, the images and the
# venv, which a fresh machine lacks; scripts/setup.sh brings them. If setup
# had to start dockerd for this run, this script stops that dockerd again at
# exit (by its pid, nothing else): stop what you start.
#
# Before any test, scripts/lint.sh checks the import contracts (.importlinter)
# and ruff's rules (pyproject.toml), about a second: a violation stops the run
# with the tools' report and exit 1, before the tests spend minutes. Otherwise
# exits with pytest's code.
#
#   scripts/test.sh                     lint, then every test (pytest tests)
#   scripts/test.sh tests/unit -x -q    lint, then any pytest arguments instead
#
# Settings (environment):
#   FLOTILLA_SKIP_LINT=1  skip the lint, for quick local loops (CI never sets it)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOCKERD_PIDFILE=/run/flotilla-dockerd.pid

live_dockerd_pid() { # the pid in the pidfile, if that process is alive
    local pid
    pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null) || return 0
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        echo "$pid"
    fi
}

DOCKERD_BEFORE=$(live_dockerd_pid)

# shellcheck disable=SC2317 # called by the EXIT trap
# Only when no dockerd ran before this run: a test may restart dockerd (a new pid
# in the pid file, tests/integration/test_postgres.py), and the successor of one
# that ran before (the demo's, say) is not this run's to stop.
stop_dockerd_if_started_here() {
    local pid
    pid=$(live_dockerd_pid)
    [[ -n "$pid" && -z "$DOCKERD_BEFORE" ]] || return 0
    log "stopping the dockerd this run started (pid $pid)..."
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 120); do  # dockerd stops its containers first: allow 30 s
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "dockerd (pid $pid) still running after 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DOCKERD_PIDFILE"
}
# Set before setup runs, so a setup that fails after starting dockerd is covered too.
trap stop_dockerd_if_started_here EXIT
trap 'exit 130' INT   # so that Ctrl-C and kill run the EXIT trap too
trap 'exit 143' TERM

bash "$FLOTILLA_ROOT/scripts/setup.sh"

cd "$FLOTILLA_ROOT"
if (($# == 0)); then
    set -- tests
fi
if [[ "${FLOTILLA_SKIP_LINT:-}" == 1 ]]; then
    log "skipping the lint (FLOTILLA_SKIP_LINT=1)"
else
    bash "$FLOTILLA_ROOT/scripts/lint.sh" || exit 1
fi
status=0
"$FLOTILLA_ROOT/.venv/bin/python" -m pytest "$@" || status=$?
exit "$status"
