#!/usr/bin/env bash
# A local Docker engine and registry for localaws, without Docker Hub.
#
#   scripts/docker-engine.sh install      apt-get install docker.io docker-registry mmdebstrap (if missing)
#   scripts/docker-engine.sh start        dockerd (overlay2 or vfs, own data root) + registry on 127.0.0.1:5000,
#                                         each unless one already answers; waits until both answer
#   scripts/docker-engine.sh base-image   build localaws/debian-python-torch:bookworm if the engine lacks it
#   scripts/docker-engine.sh stack-base   build localaws/debian-stack:bookworm (the production stack's base:
#                                         Python, PostgreSQL, Redis) if the engine lacks it
#   scripts/docker-engine.sh up           install + start + base-image
#   scripts/docker-engine.sh stop [all|engine|registry]
#                                         stop what *this script* started (pid files); never another engine
#   scripts/docker-engine.sh status       what answers, what this script started, the base image
#   scripts/docker-engine.sh selftest     port publishing on 127.0.0.1 and name resolution on a user network
#
# Every subcommand is idempotent. Settings (environment):
#   LOCALAWS_DOCKER_NETWORKING  auto (default): bridge networking, falling back to host-only
#                               (--bridge=none --iptables=false) if dockerd cannot start with it;
#                               bridge | host force one.
#   LOCALAWS_DOCKER_STORAGE     auto (default): overlay2 if an overlay mount works in the data root,
#                               else vfs (vfs copies the whole image per container: ~30 s for the
#                               1+ GB torch image); overlay2 | vfs force one.
#   LOCALAWS_DOCKER_DATA        dockerd's data root            (/var/lib/localaws-docker)
#   LOCALAWS_REGISTRY_DATA      the registry's storage         (/var/lib/localaws-registry)
#   LOCALAWS_REGISTRY_ADDR      the registry's address         (127.0.0.1:5000)
#   LOCALAWS_STATE              pid files, logs, configs       (/run/localaws-docker)
#   LOCALAWS_CACHE              base rootfs tarball cache      (~/.cache/localaws)
#   LOCALAWS_BASE_IMAGE         the base image's name          (localaws/debian-python-torch:bookworm)
#   LOCALAWS_DEBIAN_MIRROR      mmdebstrap's mirror            (http://deb.debian.org/debian)
set -euo pipefail

NETWORKING=${LOCALAWS_DOCKER_NETWORKING:-auto}
STORAGE=${LOCALAWS_DOCKER_STORAGE:-auto}
DATA_ROOT=${LOCALAWS_DOCKER_DATA:-/var/lib/localaws-docker}
REGISTRY_DATA=${LOCALAWS_REGISTRY_DATA:-/var/lib/localaws-registry}
REGISTRY_ADDR=${LOCALAWS_REGISTRY_ADDR:-127.0.0.1:5000}
STATE=${LOCALAWS_STATE:-/run/localaws-docker}
CACHE=${LOCALAWS_CACHE:-${HOME:-/root}/.cache/localaws}
BASE_IMAGE=${LOCALAWS_BASE_IMAGE:-localaws/debian-python-torch:bookworm}
MIRROR=${LOCALAWS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SOCKET=/var/run/docker.sock
# What goes into the base image besides minbase (Depends only, no Recommends).
# python3-gunicorn: the serving image's production WSGI server (experiments/digits/serve).
BASE_PACKAGES=python3,python3-numpy,python3-sklearn,python3-torch,python3-gunicorn,python3-pip,ca-certificates,procps
# The production stack's base (scripts/stack.py; docker/stack/): Python for pip's Airflow, MLflow and localaws,
# Debian's PostgreSQL 15 and Redis 7.0 for the stand-ins of the official postgres and redis images; curl for
# the health checks, tini as PID 1 (as the official images' dumb-init), git for the DAGs' commit records.
STACK_IMAGE=${LOCALAWS_STACK_IMAGE:-localaws/debian-stack:bookworm}
STACK_PACKAGES=python3,python3-venv,python3-pip,postgresql,postgresql-client,redis-server,redis-tools,curl,ca-certificates,procps,tini,git,libpq5

DOCKERD_PID=$STATE/dockerd.pid
REGISTRY_PID=$STATE/registry.pid
MODE_FILE=$STATE/networking

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p "$STATE" 2>/dev/null || true

log() { echo "docker-engine: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root"; }

# The docker CLI: Debian's (matching engine 20.10) when installed, else whatever is on PATH.
docker_cli() {
    if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker || true; fi
}

engine_answers() {
    [ -S "$SOCKET" ] || return 1
    curl -fsS --max-time 2 --unix-socket "$SOCKET" http://localhost/_ping >/dev/null 2>&1
}

registry_answers() {
    curl -fsS --max-time 2 -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null
}

# pid from a pid file if that process is alive and is what we expect (guards against pid reuse).
live_pid() { # pidfile name-substring
    local pidfile=$1 want=$2 pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$want" || return 1
    echo "$pid"
}

wait_for() { # seconds description command...
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.3
    done
}

# ---------------------------------------------------------------- install
cmd_install() {
    local missing=()
    [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
    [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
    [ -x /usr/bin/mmdebstrap ] || missing+=(mmdebstrap)
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} = 0 ]; then
        log "install: docker.io, docker-registry, mmdebstrap already installed"
        return 0
    fi
    need_root install
    log "install: ${missing[*]}"
    # No init system here: keep the packages' postinst from starting services with their
    # default settings (overlay2, /var/lib/docker); this script starts them itself.
    local policy_added=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    local rc=0
    {
        # apt-get update only if the lists are missing or a first install attempt fails.
        if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then apt-get update -qq; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" ca-certificates xz-utils >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}" ca-certificates xz-utils >/dev/null; }
    } || rc=$?
    [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || die "apt-get install failed ($rc)"
    log "install: done"
}

# ---------------------------------------------------------------- start
overlay_works() {
    local probe
    probe=$(mktemp -d "$DATA_ROOT/.overlay-probe.XXXXXX") || return 1
    mkdir -p "$probe"/{lower,upper,work,merged}
    local ok=1
    if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
        "$probe/merged" 2>/dev/null; then
        umount "$probe/merged" && ok=0
    fi
    rm -rf "$probe"
    return $ok
}

storage_driver() {
    case "$STORAGE" in
        overlay2 | vfs) echo "$STORAGE" ;;
        auto) if overlay_works; then echo overlay2; else echo vfs; fi ;;
        *) die "LOCALAWS_DOCKER_STORAGE must be auto, overlay2 or vfs" ;;
    esac
}

start_dockerd() { # mode: bridge | host
    local mode=$1 driver
    mkdir -p "$DATA_ROOT"
    driver=$(storage_driver)
    echo "$driver" >"$STATE/storage"
    local args=(--storage-driver="$driver" --data-root="$DATA_ROOT" --exec-root="$STATE/exec"
        --pidfile="$STATE/dockerd.internal.pid" -H "unix://$SOCKET" --log-level=warn)
    if [ "$mode" = host ]; then
        args+=(--bridge=none --iptables=false --ip-masq=false)
    fi
    mkdir -p "$STATE/exec"
    log "start: dockerd (${mode} networking, $driver storage, data root $DATA_ROOT)"
    setsid nohup /usr/sbin/dockerd "${args[@]}" >>"$STATE/dockerd.log" 2>&1 </dev/null &
    echo $! >"$DOCKERD_PID"
    if wait_for 60 dockerd engine_answers; then
        echo "$mode" >"$MODE_FILE"
        return 0
    fi
    log "start: dockerd did not answer with $mode networking; last log lines:"
    tail -n 15 "$STATE/dockerd.log" >&2 || true
    stop_pid "$DOCKERD_PID" dockerd 30
    return 1
}

start_registry() {
    mkdir -p "$REGISTRY_DATA"
    cat >"$STATE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGISTRY_DATA
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
EOF
    log "start: registry on $REGISTRY_ADDR (storage $REGISTRY_DATA)"
    setsid nohup /usr/bin/docker-registry serve "$STATE/registry.yml" >>"$STATE/registry.log" 2>&1 </dev/null &
    echo $! >"$REGISTRY_PID"
    wait_for 30 registry registry_answers || {
        tail -n 15 "$STATE/registry.log" >&2 || true
        die "registry did not answer at http://$REGISTRY_ADDR/v2/"
    }
}

cmd_start() {
    mkdir -p "$STATE"
    if engine_answers; then
        log "start: an engine already answers on $SOCKET"
    else
        need_root start
        [ -x /usr/sbin/dockerd ] || die "dockerd missing: run '$0 install' first"
        # A stale socket from a dead dockerd would make the new one fail.
        if [ -S "$SOCKET" ] && ! live_pid "$DOCKERD_PID" dockerd >/dev/null; then rm -f "$SOCKET"; fi
        case "$NETWORKING" in
            bridge) start_dockerd bridge || die "dockerd failed with bridge networking" ;;
            host) start_dockerd host || die "dockerd failed with host networking" ;;
            auto)
                start_dockerd bridge || {
                    log "WARNING: bridge networking unavailable, falling back to host networking only"
                    log "WARNING: (--bridge=none --iptables=false): use network_mode=host, no -p, no user networks"
                    start_dockerd host || die "dockerd failed with host networking too"
                }
                ;;
            *) die "LOCALAWS_DOCKER_NETWORKING must be auto, bridge or host" ;;
        esac
    fi
    if registry_answers; then
        log "start: a registry already answers at http://$REGISTRY_ADDR/v2/"
    else
        [ -x /usr/bin/docker-registry ] || die "docker-registry missing: run '$0 install' first"
        start_registry
    fi
    log "start: engine and registry answer"
}

# ---------------------------------------------------------------- stop
stop_pid() { # pidfile name seconds
    local pidfile=$1 name=$2 seconds=$3 pid
    if pid=$(live_pid "$pidfile" "$name"); then
        log "stop: $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + seconds))
        while [ -d "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.3; done
        if [ -d "/proc/$pid" ]; then
            log "stop: $name did not exit in ${seconds}s, SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

cmd_stop() { # [all|engine|registry]
    local what=${1:-all}
    case "$what" in all|engine|registry) ;; *) die "stop: all, engine or registry" ;; esac
    if [ "$what" != engine ]; then stop_pid "$REGISTRY_PID" docker-registry 10; fi
    [ "$what" != registry ] || return 0
    if live_pid "$DOCKERD_PID" dockerd >/dev/null; then
        stop_pid "$DOCKERD_PID" dockerd 40
        rm -f "$MODE_FILE"
    else
        rm -f "$DOCKERD_PID"
        log "stop: no dockerd started by this script is running (others are left alone)"
    fi
}

# ---------------------------------------------------------------- status
cmd_status() {
    local pid rc=0
    if engine_answers; then
        local version
        version=$(curl -fsS --max-time 2 --unix-socket "$SOCKET" http://localhost/version |
            sed -n 's/.*"Version":"\([^"]*\)".*/\1/p' | head -1)
        if pid=$(live_pid "$DOCKERD_PID" dockerd); then
            echo "engine:   answers on $SOCKET (version $version), started by this script (pid $pid," \
                "$(cat "$MODE_FILE" 2>/dev/null || echo '?') networking, $(cat "$STATE/storage" 2>/dev/null || echo '?') storage)"
        else
            echo "engine:   answers on $SOCKET (version $version), not started by this script"
        fi
    else
        echo "engine:   not answering"; rc=1
    fi
    if registry_answers; then
        if pid=$(live_pid "$REGISTRY_PID" docker-registry); then
            echo "registry: answers at http://$REGISTRY_ADDR/v2/, started by this script (pid $pid)"
        else
            echo "registry: answers at http://$REGISTRY_ADDR/v2/, not started by this script"
        fi
    else
        echo "registry: not answering at http://$REGISTRY_ADDR/v2/"; rc=1
    fi
    if engine_answers; then
        if base_image_present; then echo "base:     $BASE_IMAGE present"; else echo "base:     $BASE_IMAGE missing"; rc=1; fi
    fi
    return $rc
}

# ---------------------------------------------------------------- base-image
# What the base image is built from; an image imported from another package list is stale.
base_key() { # packages
    printf '%s\n' "bookworm" "$1" "v2" | sha256sum | cut -c1-12
}

image_has_key() { # image key
    local json
    json=$(curl -fsS --max-time 5 --unix-socket "$SOCKET" "http://localhost/images/${1}/json" 2>/dev/null) ||
        return 1
    [[ $json == *"\"localaws.base-key\":\"$2\""* ]]
}

base_image_present() { image_has_key "$BASE_IMAGE" "$(base_key "$BASE_PACKAGES")"; }

# Keep the image small: no package caches, docs, locales, nor what only building needs
# (compilers, headers, static libraries, torch's test binaries, mesa's GPU drivers and their
# LLVM, pulled in by scipy -> pythran and libtorch -> opencv). Files go, dpkg's database stays,
# so apt-get in a derived image still works (but a derived image needing gcc must reinstall it).
trim_rootfs() {
    local root=$1
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
        "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
        "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/var/log/*.log \
        "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/*
    rm -rf "$root"/usr/include "$root"/usr/lib/gcc "$root"/usr/libexec/gcc "$root"/usr/lib/libtorch-test \
        "$root"/usr/lib/x86_64-linux-gnu/dri "$root"/usr/share/gcc
    rm -f "$root"/usr/bin/*lto-dump* "$root"/usr/lib/x86_64-linux-gnu/libLLVM-15.so*
    find "$root"/usr/lib -name '*.a' -type f -delete
    find "$root"/usr/lib/python3* -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
    # A container is its own environment: let `pip install -r requirements.txt` work (PEP 668).
    rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
    ln -sf python3 "$root/usr/bin/python"
    printf 'deb %s bookworm main\n' "$MIRROR" >"$root/etc/apt/sources.list"
    : >"$root/etc/hostname"
}

# The certificate authorities this host adds to Debian's (a proxy's, a company's): an image that downloads
# (pip in a build) must trust them as the host does. Their digest is part of the image's key.
HOST_CAS=/usr/local/share/ca-certificates
host_cas_digest() {
    find "$HOST_CAS" -name '*.crt' -type f 2>/dev/null | sort | xargs -r cat | sha256sum | cut -c1-12
}
add_host_cas() { # root
    local root=$1
    find "$HOST_CAS" -name '*.crt' -type f 2>/dev/null | grep -q . || return 0
    mkdir -p "$root$HOST_CAS"
    cp "$HOST_CAS"/*.crt "$root$HOST_CAS"/ 2>/dev/null || true
    chroot "$root" update-ca-certificates >/dev/null
    log "base-image: added this host's certificate authorities ($(ls "$HOST_CAS"/*.crt | wc -l))"
}

# A bootstrapped bookworm (minbase + packages; mmdebstrap, which downloads through apt in parallel: half
# debootstrap's time here), trimmed, checked by a command run in it, cached as a tarball
# and imported as an image labelled with its package list's key (an image from another list is rebuilt).
build_base() { # image packages tarball-stem check-command [with-host-cas]
    local image=$1 packages=$2 stem=$3 check=$4 cas=${5:-} key tarball
    engine_answers || die "no engine answers on $SOCKET: run '$0 start' first"
    key=$(base_key "$packages${cas:+ $(host_cas_digest)}")
    if image_has_key "$image" "$key"; then
        log "base-image: $image already in the engine"
        return 0
    fi
    need_root base-image
    tarball="$CACHE/$stem-$key.tar"
    mkdir -p "$CACHE"
    if [ ! -s "$tarball" ]; then
        [ -x /usr/bin/mmdebstrap ] || die "mmdebstrap missing: run '$0 install' first"
        local root
        root=$(mktemp -d /var/tmp/localaws-rootfs.XXXXXX)
        # shellcheck disable=SC2064
        trap "umount -l '$root/proc' 2>/dev/null || true; rm -rf '$root'" EXIT
        log "base-image: mmdebstrap bookworm (minbase + $packages) into $root"
        local t0=$SECONDS
        if ! mmdebstrap --mode=root --variant=minbase --include="$packages" bookworm "$root" "$MIRROR" \
            >"$STATE/mmdebstrap-$stem.log" 2>&1; then
            tail -n 20 "$STATE/mmdebstrap-$stem.log" >&2
            die "mmdebstrap failed (log: $STATE/mmdebstrap-$stem.log)"
        fi
        log "base-image: mmdebstrap took $((SECONDS - t0))s"
        trim_rootfs "$root"
        [ -z "$cas" ] || add_host_cas "$root"
        log "base-image: checking the trimmed rootfs: $check"
        mount -t proc proc "$root/proc"
        chroot "$root" /bin/sh -c "$check" >/dev/null || die "the trimmed rootfs fails: $check"
        umount "$root/proc"
        log "base-image: rootfs $(du -sh "$root" | cut -f1); writing $tarball"
        tar --numeric-owner -C "$root" -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        find "$CACHE" -maxdepth 1 -name "$stem-*.tar*" ! -name "${tarball##*/}" -delete
        rm -rf "$root"
        trap - EXIT
    else
        log "base-image: using cached $tarball"
    fi
    log "base-image: docker import -> $image"
    local t1=$SECONDS
    "$(docker_cli)" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL localaws.base-key=$key" \
        "$tarball" "$image" >/dev/null
    log "base-image: import took $((SECONDS - t1))s"
}

cmd_base_image() {
    build_base "$BASE_IMAGE" "$BASE_PACKAGES" debian-bookworm-python-torch \
        "python3 -c 'import torch, sklearn, sklearn.linear_model, scipy.optimize, numpy; print(float(torch.ones(3) @ torch.ones(3)))'"
}

cmd_stack_base() {
    build_base "$STACK_IMAGE" "$STACK_PACKAGES" debian-bookworm-stack \
        "python3 -m venv --help && /usr/lib/postgresql/15/bin/postgres --version && redis-server --version && curl --version && tini --version" \
        with-host-cas
}

# ---------------------------------------------------------------- selftest
cmd_selftest() {
    engine_answers || die "no engine answers on $SOCKET"
    base_image_present || die "$BASE_IMAGE missing: run '$0 base-image' first"
    local docker net=localaws-selftest port=18089 ok=0
    docker=$(docker_cli)
    "$docker" rm -f localaws-selftest-a localaws-selftest-b localaws-selftest-web >/dev/null 2>&1 || true
    "$docker" network rm "$net" >/dev/null 2>&1 || true
    # 1. A port published on 127.0.0.1.
    "$docker" run -d --rm --name localaws-selftest-web --label localaws=1 -p "127.0.0.1:$port:8080" \
        "$BASE_IMAGE" python3 -m http.server 8080 >/dev/null
    if wait_for 20 web curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$port/"; then
        echo "selftest: published port 127.0.0.1:$port -> 8080: ok"
    else
        echo "selftest: published port 127.0.0.1:$port -> 8080: FAILED"; ok=1
    fi
    "$docker" rm -f localaws-selftest-web >/dev/null 2>&1 || true
    # 2. Name resolution on a user-defined bridge network.
    "$docker" network create --label localaws=1 "$net" >/dev/null
    "$docker" run -d --name localaws-selftest-a --hostname algo-1 --network "$net" --network-alias algo-1 \
        --label localaws=1 "$BASE_IMAGE" python3 -m http.server 8080 >/dev/null
    if "$docker" run --rm --name localaws-selftest-b --hostname algo-2 --network "$net" --label localaws=1 \
        "$BASE_IMAGE" python3 -c '
import socket, time, urllib.request
for _ in range(50):
    try:
        urllib.request.urlopen("http://algo-1:8080/", timeout=1).read(); break
    except Exception:
        time.sleep(0.2)
else:
    raise SystemExit("algo-1 unreachable")
print("selftest: algo-2 resolves algo-1 ->", socket.gethostbyname("algo-1"), "and reaches it: ok")
'; then :; else
        echo "selftest: name resolution on a user network: FAILED"; ok=1
    fi
    "$docker" rm -f localaws-selftest-a >/dev/null 2>&1 || true
    "$docker" network rm "$net" >/dev/null 2>&1 || true
    return $ok
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    base-image) cmd_base_image ;;
    stack-base) cmd_stack_base ;;
    up) cmd_install; cmd_start; cmd_base_image ;;
    stop) cmd_stop "${2:-all}" ;;
    status) cmd_status ;;
    selftest) cmd_selftest ;;
    *) echo "usage: $0 install|start|base-image|stack-base|up|stop|status|selftest" >&2; exit 2 ;;
esac
