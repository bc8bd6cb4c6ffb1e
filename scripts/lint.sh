#!/usr/bin/env bash
# Checks the architecture and the code before any test runs: import-linter's
# contracts (.importlinter: layers, independence, one module per SDK) and
# ruff's rules (pyproject.toml, [tool.ruff]).
#
# Why it exists: the layers are a rule CI enforces, not a wish (see
# docs/architecture.md). scripts/test.sh runs this first, so a broken contract
# or a lint finding fails CI (.ci/run) in a second, before the integration
# tests spend minutes. Both tools always run, so one run shows every problem;
# a passing tool prints one line, a failing one its own full report. Exits 0
# when both pass, 1 otherwise.
#
#   scripts/lint.sh        from anywhere; needs the venv of scripts/setup.sh
#
# Fixing: `ruff check --fix` sorts imports and drops unused noqa codes (keep
# a noqa's reason as a plain comment by hand: the fix deletes it). A broken
# contract names the importer, the imported module and the line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$FLOTILLA_ROOT/.venv"

for tool in lint-imports ruff; do
    [[ -x "$VENV/bin/$tool" ]] || die "$VENV/bin/$tool is missing; run scripts/setup.sh (it installs '.[test]')"
done

run_tool() { # NAME COMMAND...: one line when it passes, its whole output when it fails
    local name=$1 output status=0
    shift
    output=$("$@" 2>&1) || status=$?
    if ((status == 0)); then
        log "$name: passed (${output##*$'\n'})"
    else
        printf '%s\n' "$output"
        log "$name: FAILED (exit $status; its report is above)"
    fi
    return "$status"
}

cd "$FLOTILLA_ROOT"
failed=0
log "lint 1/2: import-linter, the contracts in .importlinter"
# PYTHONPATH: the graph is built from this checkout's src/, whatever the venv's
# editable install points at. No cache: the graph takes a fraction of a second.
PYTHONPATH="$FLOTILLA_ROOT/src" run_tool import-linter "$VENV/bin/lint-imports" --no-logo --no-cache || failed=1
log "lint 2/2: ruff, the rules in pyproject.toml [tool.ruff]"
# One line per finding (FILE:LINE:COL: CODE what); `ruff check` shows each in its context.
run_tool ruff "$VENV/bin/ruff" check --no-cache --output-format=concise "$FLOTILLA_ROOT" || failed=1
exit "$failed"
