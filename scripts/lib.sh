# shellcheck shell=bash
# Small helpers shared by the scripts in this folder (sourced, never run), so
# that every script reports progress the same way and finds the repo root the
# same way, wherever it is called from.

# shellcheck disable=SC2034 # used by the scripts that source this file
FLOTILLA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Progress and errors go to stderr so that stdout stays free for real output.
log() { printf '%s %s\n' "[flotilla]" "$*" >&2; }
die() { printf '%s %s\n' "[flotilla] error:" "$*" >&2; exit 1; }

# Seconds since the epoch with a fraction, for "took 1.2s" lines.
now() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

docker_up() { docker info >/dev/null 2>&1; }
