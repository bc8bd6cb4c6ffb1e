#!/usr/bin/env bash
# Builds the container images Flotilla's tests and demo run on.
#
# Why it exists: no container registry is reachable on our machines, so
# `docker pull python:3.12-slim` never works. Instead the Python base image is
# made from Debian packages (debootstrap + docker import, about a minute) and
# cached twice: by tag in Docker, and as a rootfs tarball on disk so that a
# wiped /var/lib/docker re-imports in seconds. Then the demo app's images
# (examples/shop) are built on top of it, each skipped while its label
# io.flotilla.source-hash still matches its sources, so a rerun is instant.
#
# The same recipe makes the Redis image of the redis-cluster cache
# (redis-server and redis-tools from Debian, Redis 7.0), and the PostgreSQL 15
# image for stateful services (postgresql-15 from Debian, plus the entry script
# in images/postgres: initdb on an empty volume, password from the vault); and,
# only when asked (`build-images.sh static`, which benchmarks/tls.py runs on
# demand), a static responder for benchmarks: nginx-light from Debian,
# flotilla/static:bookworm.
#
# Settings (environment):
#   FLOTILLA_PYTHON_IMAGE   base image for the demo app (default flotilla/python:bookworm).
#                           Anything other than our local tag (python:3.12-slim, say)
#                           is never built here: it must already exist (docker pull it).
#   FLOTILLA_REDIS_IMAGE    the caches' Redis image (default flotilla/redis:bookworm); the
#                           same rule: another tag (redis:7, say) must already exist.
#   FLOTILLA_POSTGRES_IMAGE the PostgreSQL image (default flotilla/postgres:15); another tag
#                           (postgres:15, say) must already exist, as above.
#   FLOTILLA_CACHE          cache root (default /var/cache/flotilla); tarballs go to images/.
#   FLOTILLA_DEBIAN_MIRROR  Debian mirror for debootstrap (default http://deb.debian.org/debian).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOCAL_PYTHON_IMAGE="flotilla/python:bookworm"
PYTHON_IMAGE="${FLOTILLA_PYTHON_IMAGE:-$LOCAL_PYTHON_IMAGE}"
IMAGE_CACHE="${FLOTILLA_CACHE:-/var/cache/flotilla}/images"
DEBIAN_MIRROR="${FLOTILLA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SUITE="bookworm"
PYTHON_PACKAGES="python3,python3-redis,ca-certificates"
LOCAL_REDIS_IMAGE="flotilla/redis:bookworm"
REDIS_IMAGE="${FLOTILLA_REDIS_IMAGE:-$LOCAL_REDIS_IMAGE}"
REDIS_PACKAGES="redis-server,redis-tools"
LOCAL_POSTGRES_IMAGE="flotilla/postgres:15"
POSTGRES_IMAGE="${FLOTILLA_POSTGRES_IMAGE:-$LOCAL_POSTGRES_IMAGE}"
POSTGRES_BASE="flotilla/postgres-base:bookworm"
POSTGRES_PACKAGES="postgresql-15"
POSTGRES_DIR="$FLOTILLA_ROOT/images/postgres"
STATIC_IMAGE="flotilla/static:bookworm"
STATIC_PACKAGES="nginx-light"
# Bump when make_rootfs changes what goes into the tarball, to invalidate caches.
ROOTFS_RECIPE=1

SHOP_DIR="$FLOTILLA_ROOT/examples/shop"
SHOP_SERVICES=(web catalog cart)
SHOP_TAG=1

WORK_DIR=""
cleanup() {
    [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]] || return 0
    # debootstrap mounts /proc and /sys inside the target; a failed run can
    # leave them mounted, and rm must never walk into those.
    findmnt -rn -o TARGET | grep -F "$WORK_DIR/" | sort -r | xargs -r umount -l 2>/dev/null || true
    rm -rf --one-file-system "$WORK_DIR"
}
trap cleanup EXIT

image_label() { # IMAGE LABEL -> the label's value, empty if no such image or label
    docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null | sed 's/^<no value>$//' || true
}

image_id() { docker image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }

# --- the base image, from Debian packages ------------------------------------

make_rootfs() { # INCLUDE TARBALL: debootstrap a minimal bookworm and tar it
    local include=$1 tarball=$2 started
    command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/setup.sh installs it)"
    [[ $(id -u) == 0 ]] || die "debootstrap needs root; run this script as root"
    WORK_DIR="$(mktemp -d "${TMPDIR:-/var/tmp}/flotilla-rootfs.XXXXXX")"
    local root="$WORK_DIR/root" logfile="$WORK_DIR/debootstrap.log"
    started=$(now)
    if ! debootstrap --variant=minbase --include="$include" \
            "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >"$logfile" 2>&1; then
        tail -n 30 "$logfile" >&2
        die "debootstrap failed (last lines of its log above)"
    fi
    # Leave out what a container never needs: package caches, docs, the
    # host's resolver and name (Docker mounts its own over those).
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
           "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    find "$root/usr/share/doc" -depth -mindepth 2 ! -name copyright ! -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    : >"$root/etc/resolv.conf"
    echo localhost >"$root/etc/hostname"
    mkdir -p "$(dirname "$tarball")"
    tar --numeric-owner -C "$root" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    log "debootstrap and packing took $(elapsed_since "$started")"
    cleanup
    WORK_DIR=""
}

build_base_image() { # TAG INCLUDE CMD_JSON
    local tag=$1 include=$2 cmd=$3 key tarball
    key=$(printf '%s\n' "$ROOTFS_RECIPE" "$DEBIAN_SUITE" minbase "$include" "$cmd" | sha256sum | cut -c1-16)
    if [[ "$(image_label "$tag" io.flotilla.rootfs-key)" == "$key" ]]; then
        log "base image $tag is up to date"
        return
    fi
    mkdir -p "$IMAGE_CACHE"
    # Two setups at once (two shells, two engineers) wait here instead of
    # debootstrapping twice; the second then finds the image made.
    exec 9>"$IMAGE_CACHE/.lock"
    flock 9
    if [[ "$(image_label "$tag" io.flotilla.rootfs-key)" != "$key" ]]; then
        tarball="$IMAGE_CACHE/${tag//[:\/]/_}-$key.tar"
        if [[ -s "$tarball" ]]; then
            log "importing base image $tag from the cached rootfs $tarball..."
        else
            log "building base image $tag from Debian packages (about a minute)..."
            make_rootfs "$include" "$tarball"
            # Older tarballs of the same tag are dead weight now.
            find "$IMAGE_CACHE" -maxdepth 1 -name "${tag//[:\/]/_}-*.tar" ! -path "$tarball" -delete
        fi
        docker import \
            --change "CMD $cmd" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change "LABEL io.flotilla.rootfs-key=$key" \
            --change "LABEL io.flotilla.rootfs-packages=$include" \
            --message "debootstrap --variant=minbase --include=$include $DEBIAN_SUITE" \
            "$tarball" "$tag" >/dev/null
        log "base image $tag is ready"
    fi
    flock -u 9
}

ensure_image() { # IMAGE LOCAL_TAG PACKAGES CMD_JSON SETTING
    local image=$1 local_tag=$2 packages=$3 cmd=$4 setting=$5
    if [[ "$image" == "$local_tag" ]]; then
        build_base_image "$local_tag" "$packages" "$cmd"
    elif docker image inspect "$image" >/dev/null 2>&1; then
        log "using image $image (from $setting)"
    else
        die "$setting=$image is not on this Docker host. Pull it first \
(docker pull $image), or unset $setting to build $local_tag from Debian packages."
    fi
}

# --- images built on a base image ---------------------------------------------

# An image is a function of its sources and the exact base image, so the hash
# covers both; a rerun with both unchanged only says so.
source_hash() { # BASE_ID DIR PATH... (paths relative to DIR)
    local base=$1 dir=$2
    shift 2
    {
        printf 'base %s\n' "$base"
        cd "$dir"
        find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-64
}

build_on_base() { # IMAGE DOCKERFILE CONTEXT BASE_IMAGE HASH [LABEL=VALUE]
    local image=$1 dockerfile=$2 context=$3 base=$4 hash=$5 label=${6:-} old_id logfile
    if [[ "$(image_label "$image" io.flotilla.source-hash)" == "$hash" ]]; then
        log "$image is up to date"
        return
    fi
    log "building $image from ${dockerfile#"$FLOTILLA_ROOT"/}..."
    old_id=$(image_id "$image")
    logfile="$(mktemp)"
    # The classic builder uses a local FROM image without asking a registry;
    # BuildKit would try to resolve it remotely, which fails offline.
    if ! DOCKER_BUILDKIT=0 docker build \
            --build-arg "BASE_IMAGE=$base" --build-arg "SOURCE_HASH=$hash" \
            ${label:+--label "$label"} \
            -t "$image" -f "$dockerfile" "$context" >"$logfile" 2>&1; then
        cat "$logfile" >&2
        rm -f "$logfile"
        die "docker build of $image failed (output above)"
    fi
    rm -f "$logfile"
    # The image this replaced is now untagged; drop it unless something uses it.
    if [[ -n "$old_id" && "$old_id" != "$(image_id "$image")" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
}

# The demo app's images: a service's folder, the shared code and the .dockerignore.
build_shop_image() { # SERVICE BASE_ID
    local svc=$1 base_id=$2
    build_on_base "shop-$svc:$SHOP_TAG" "$SHOP_DIR/$svc/Dockerfile" "$SHOP_DIR" "$PYTHON_IMAGE" \
        "$(source_hash "$base_id" "$SHOP_DIR" "$svc" common .dockerignore)" "io.flotilla.example=shop"
}

# PostgreSQL: Debian's packages as a base, then the entry script on top.
ensure_postgres_image() {
    local started
    if [[ "$POSTGRES_IMAGE" != "$LOCAL_POSTGRES_IMAGE" ]]; then
        ensure_image "$POSTGRES_IMAGE" "$LOCAL_POSTGRES_IMAGE" "" "" FLOTILLA_POSTGRES_IMAGE
        return
    fi
    started=$(now)
    build_base_image "$POSTGRES_BASE" "$POSTGRES_PACKAGES" '["/bin/sh"]'
    build_on_base "$POSTGRES_IMAGE" "$POSTGRES_DIR/Dockerfile" "$POSTGRES_DIR" "$POSTGRES_BASE" \
        "$(source_hash "$(image_id "$POSTGRES_BASE")" "$POSTGRES_DIR" .)"
    log "PostgreSQL image $POSTGRES_IMAGE ready in $(elapsed_since "$started")"
}

main() {
    local started base_id svc
    started=$(now)
    docker_up || die "Docker Engine is not reachable (docker info fails); scripts/setup.sh installs and starts it"
    if [[ "${1:-}" == static ]]; then
        # The benchmark gives the replicas their own nginx.conf (command and env in its spec).
        build_base_image "$STATIC_IMAGE" "$STATIC_PACKAGES" '["nginx", "-g", "daemon off;"]'
        return
    fi
    ensure_image "$PYTHON_IMAGE" "$LOCAL_PYTHON_IMAGE" "$PYTHON_PACKAGES" '["python3"]' FLOTILLA_PYTHON_IMAGE
    ensure_image "$REDIS_IMAGE" "$LOCAL_REDIS_IMAGE" "$REDIS_PACKAGES" '["redis-server"]' FLOTILLA_REDIS_IMAGE
    ensure_postgres_image
    base_id=$(image_id "$PYTHON_IMAGE")
    for svc in "${SHOP_SERVICES[@]}"; do
        build_shop_image "$svc" "$base_id"
    done
    log "images ready in $(elapsed_since "$started"): $PYTHON_IMAGE $REDIS_IMAGE $POSTGRES_IMAGE ${SHOP_SERVICES[*]/#/shop-}"
}

main "$@"
