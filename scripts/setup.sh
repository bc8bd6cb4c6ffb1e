#!/usr/bin/env bash
# Makes a machine ready to develop, test and demo Flotilla, from nothing.
#
# Why it exists: our machines (and CI's) start bare, with no Docker Engine
# installed or running and no registry to pull images from, so every step is
# here: Debian packages, a running dockerd, the project's venv, the images.
# Each step checks first and skips when already done, so a rerun takes about
# a second. Run it as root (apt-get, dockerd and debootstrap need it).
#
# Settings (environment):
#   FLOTILLA_SKIP_IMAGES=1  skip building images (scripts/build-images.sh)
#   and those of scripts/build-images.sh (FLOTILLA_PYTHON_IMAGE, FLOTILLA_POSTGRES_IMAGE, FLOTILLA_CACHE).
#
# If it starts dockerd, the pid goes to /run/flotilla-dockerd.pid, so that
# whoever needs to (scripts/test.sh) can stop exactly that process.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# wrk and nginx serve benchmarks/gateway.py (a load tool, and the peer proxy
# it measures the gateway against); the benchmark starts its own nginx.
# chromium (and a font for its screenshots) is the browser the dashboard's
# tests drive through Playwright (tests/browser/): Debian's, so Playwright
# never downloads one.
# docker-registry and apache2-utils (htpasswd): the tests' private registry
# (tests/support/registry.py starts its own on 127.0.0.1; the package's service
# is never started, policy-rc.d below holds it).
# pebble (Let's Encrypt's ACME test server) issues the HTTPS tests' certificates;
# sslscan judges the gateway's protocols and ciphers; caddy is, with nginx, the
# peer benchmarks/tls.py measures HTTPS against, and h2load (nghttp2-client) the
# load tool that speaks HTTP/2.
APT_PACKAGES=(docker.io debootstrap iproute2 haproxy wrk nginx redis-tools chromium fonts-dejavu-core
              docker-registry apache2-utils pebble sslscan caddy nghttp2-client)
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_SAVED=/usr/sbin/policy-rc.d.flotilla-saved
POLICY_RC_D_MARK="# written by flotilla scripts/setup.sh: no service starts during apt-get install"
DOCKERD_PIDFILE=/run/flotilla-dockerd.pid
DOCKERD_LOG=/var/log/flotilla-dockerd.log
DOCKERD_WAIT_SECONDS=30
VENV="$FLOTILLA_ROOT/.venv"
VENV_STAMP="$VENV/.flotilla-pyproject.sha256"

all_installed() { # dpkg's word that every package is installed (not merely known)
    local states
    states=$(dpkg-query -W -f='${db:Status-Status}\n' "$@" 2>/dev/null) || return 1
    ! grep -qvx installed <<<"$states"
}

install_packages() {
    allow_service_starts # puts back what a killed run may have left aside
    if all_installed "${APT_PACKAGES[@]}"; then
        log "Debian packages present: ${APT_PACKAGES[*]}"
        return
    fi
    [[ $(id -u) == 0 ]] || die "installing ${APT_PACKAGES[*]} needs root; run this script as root"
    log "installing Debian packages: ${APT_PACKAGES[*]} (about a minute)..."
    local logfile=/var/log/flotilla-apt.log
    if ! apt-get update >"$logfile" 2>&1; then
        log "warning: apt-get update reported errors (see $logfile); trying the install anyway"
    fi
    forbid_service_starts
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "${APT_PACKAGES[@]}" >>"$logfile" 2>&1; then
        allow_service_starts
        tail -n 30 "$logfile" >&2
        die "apt-get install failed (last lines of $logfile above)"
    fi
    allow_service_starts
}

# Packages such as nginx and haproxy start their daemon from postinst; nothing
# here wants that (the benchmark and the gateway start their own, by pid). A
# policy-rc.d that exits 101 tells invoke-rc.d "not now", for the install only:
# a policy-rc.d already there is moved aside and put back afterwards, also when
# the install fails (what a killed run left is put back by the next run).
forbid_service_starts() {
    allow_service_starts
    if [[ -e "$POLICY_RC_D" ]]; then
        mv "$POLICY_RC_D" "$POLICY_RC_D_SAVED"
    fi
    printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_RC_D_MARK" >"$POLICY_RC_D"
    chmod 0755 "$POLICY_RC_D"
}

allow_service_starts() {
    if [[ -f "$POLICY_RC_D" ]] && grep -qxF "$POLICY_RC_D_MARK" "$POLICY_RC_D"; then
        rm -f "$POLICY_RC_D"
    fi
    if [[ -e "$POLICY_RC_D_SAVED" && ! -e "$POLICY_RC_D" ]]; then
        mv "$POLICY_RC_D_SAVED" "$POLICY_RC_D"
    fi
}

ensure_cgroups() {
    # dockerd needs cgroups mounted; a bare VM with no init system may not have them.
    if mountpoint -q /sys/fs/cgroup; then
        return
    fi
    log "mounting the cgroup2 hierarchy on /sys/fs/cgroup (dockerd needs one)"
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
}

start_dockerd() {
    if docker_up; then
        log "Docker Engine is running"
        warn_without_userns_remap
        return
    fi
    [[ $(id -u) == 0 ]] || die "Docker Engine is not running and only root can start dockerd"
    ensure_cgroups
    log "starting dockerd with user-namespace remapping (log: $DOCKERD_LOG)..."
    nohup dockerd --userns-remap=default >"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$! waited=0
    echo "$pid" >"$DOCKERD_PIDFILE"
    until docker_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2
            die "dockerd exited at start (last lines of $DOCKERD_LOG above)"
        fi
        if ((waited >= DOCKERD_WAIT_SECONDS * 4)); then
            tail -n 20 "$DOCKERD_LOG" >&2
            die "dockerd did not answer within ${DOCKERD_WAIT_SECONDS}s (last lines of $DOCKERD_LOG above)"
        fi
        sleep 0.25
        waited=$((waited + 1))
    done
    log "dockerd is up (pid $pid, in $DOCKERD_PIDFILE)"
}

# A replica's uid 0 (or 65534) must not be a uid a host user has, or that user
# reads its /proc/PID/environ and, through /proc/PID/root, its secret files.
# A dockerd started here remaps them (--userns-remap=default: container uids
# land in dockremap's range of /etc/subuid, 100000 and up); one started by
# someone else is left alone, with a word.
warn_without_userns_remap() {
    if ! docker info --format '{{json .SecurityOptions}}' 2>/dev/null | grep -q 'name=userns'; then
        log "warning: this Docker Engine does not remap user namespaces, so replicas share uids with host users;" \
            "start dockerd with --userns-remap=default (docs/security.md)"
    fi
}

setup_venv() {
    local want
    want=$(sha256sum "$FLOTILLA_ROOT/pyproject.toml" | cut -d' ' -f1)
    if [[ -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$want" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
        log "venv .venv is up to date with pyproject.toml"
        return
    fi
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        log "creating the venv .venv ($(python3 --version))..."
        python3 -m venv --clear "$VENV"
    fi
    log "installing flotilla and its test tools into .venv (pip install -e '.[test]')..."
    local logfile="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "${FLOTILLA_ROOT}[test]" \
            >"$logfile" 2>&1; then
        tail -n 30 "$logfile" >&2
        die "pip install failed (last lines of $logfile above)"
    fi
    echo "$want" >"$VENV_STAMP"
}

CHECKOV_VENV="$FLOTILLA_ROOT/.venv-checkov"
CHECKOV_VERSION=3.3.30

setup_checkov() {
    # checkov pins versions that clash with ours, so it gets a venv of its own;
    # the Kubernetes tests find it there (tests/integration/test_kubernetes_checkov.py).
    if [[ -x "$CHECKOV_VENV/bin/checkov" && -f "$CHECKOV_VENV/.version" \
          && "$(cat "$CHECKOV_VENV/.version")" == "$CHECKOV_VERSION" ]]; then
        log "checkov $CHECKOV_VERSION present in .venv-checkov"
        return
    fi
    log "installing checkov $CHECKOV_VERSION into .venv-checkov (a minute or two)..."
    python3 -m venv "$CHECKOV_VENV"
    local logfile="$CHECKOV_VENV/pip-install.log"
    if ! "$CHECKOV_VENV/bin/python" -m pip install --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
            >"$logfile" 2>&1; then
        tail -n 30 "$logfile" >&2
        die "pip install checkov failed (last lines of $logfile above)"
    fi
    echo "$CHECKOV_VERSION" >"$CHECKOV_VENV/.version"
}

main() {
    local started
    started=$(now)
    install_packages
    start_dockerd
    setup_venv
    setup_checkov
    if [[ "${FLOTILLA_SKIP_IMAGES:-}" == 1 ]]; then
        log "skipping images (FLOTILLA_SKIP_IMAGES=1)"
    else
        bash "$FLOTILLA_ROOT/scripts/build-images.sh"
    fi
    log "setup done in $(elapsed_since "$started")"
}

# Run when executed; sourcing only defines the steps (handy for trying one).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
