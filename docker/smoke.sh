#!/usr/bin/env bash
# A real build and run of one lab image on a private Docker engine (the opt-in `nox -s docker-smoke`).
#
#   sudo docker/smoke.sh                                    # lab1: --help, then one epoch on digits
#   sudo LAB=lab4 SMOKE_ARGS="--help" SMOKE_EXPECT= docker/smoke.sh
#   sudo DLA_SMOKE_KEEP=1 docker/smoke.sh                   # keep the engine's images: reruns take seconds
#
# Steps (timed; everything but the cache is undone at the end):
#   1. install Debian's docker.io and debootstrap if dockerd is missing (apt-get);
#   2. start a private dockerd: its own data root, exec root and socket, no iptables, no bridge;
#   3. make a local base image, debootstrap --variant=minbase bookworm + docker import, with this
#      machine's CA certificates added to it (traffic leaves through a TLS-intercepting proxy; the
#      certificates go into this local base only, never into the project's Dockerfile), cached as a
#      `docker save` tar;
#   4. build the lab's target of docker/Dockerfile on that base (BASE_IMAGE build argument; the classic
#      builder, --network host), check the image (entrypoint, user, volumes), run `LAB --help` and
#      `LAB SMOKE_ARGS` in it offline (--network none) with a runs folder mounted, and check that the
#      command wrote SMOKE_EXPECT there.
# Exit status 77 means skipped (not root, not Linux, no way to get dockerd, …), with the reason printed.
set -euo pipefail

LAB=${LAB:-lab1}
SMOKE_ARGS=${SMOKE_ARGS:-train --model mlp --depth 2 --dataset digits --epochs 1 --out /runs/smoke}
SMOKE_EXPECT=${SMOKE_EXPECT-smoke/metrics.json}     # a file the command must write under /runs; empty: none
SMOKE_BUILD_ARGS=${SMOKE_BUILD_ARGS:-}              # more `docker build` flags, e.g. --build-arg TORCH_…=…
CACHE=${DLA_SMOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dla-docker-smoke}
KEEP=${DLA_SMOKE_KEEP:-0}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_DIR=${CA_DIR:-/usr/local/share/ca-certificates}
ROOT=$(cd -P "$(dirname "$0")/.." && pwd)
BASE_TAG=dla-smoke/bookworm:local
IMAGE=dla-smoke/$LAB:local

skip() { echo "docker-smoke SKIPPED: $*" >&2; exit 77; }
say() { printf '\n== %s\n' "$*" >&2; }

# ---- can it run here? ---------------------------------------------------------------------------------
[[ $LAB =~ ^lab[0-9]+$ ]] || { echo "LAB must be a lab's name (lab1, lab2, …), not '$LAB'" >&2; exit 2; }
[[ $(uname -s) == Linux ]] || skip "needs Linux (a private dockerd)"
[[ $EUID -eq 0 ]] || skip "needs root to start a private dockerd (run it with sudo)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip "the kernel has no overlay filesystem"

TIMES=()
START=$SECONDS
step_start=$SECONDS
timed() {  # timed "what" → records the seconds since the previous mark
    TIMES+=("$(printf '%5ds  %s' $((SECONDS - step_start)) "$1")")
    step_start=$SECONDS
}

# ---- 1. the engine's packages ---------------------------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || skip "dockerd/debootstrap missing and no apt-get to install them"
    say "installing docker.io and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap \
        >/dev/null || skip "apt-get could not install docker.io and debootstrap"
    timed "apt-get install docker.io debootstrap"
fi
# Debian's client speaks the classic builder to Debian's engine; a newer client elsewhere on PATH may not.
DOCKER=$(command -v /usr/bin/docker || command -v docker)

# ---- 2. a private engine ----------------------------------------------------------------------------------
STATE=$(mktemp -d /tmp/dla-smoke.XXXXXX)          # exec root and socket: short paths (socket limit)
mkdir -p "$CACHE"
DATA_ROOT=$STATE/engine
[[ $KEEP == 1 ]] && DATA_ROOT=$CACHE/engine
DOCKERD_PID=
cleanup() {
    local rc=$?
    if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill "$DOCKERD_PID"
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID"
    fi
    # unmount whatever the engine left mounted under our folders, deepest first, before removing them
    grep -oE " ($STATE|$DATA_ROOT)[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$STATE"
    exit "$rc"
}
trap cleanup EXIT
say "starting dockerd (data root $DATA_ROOT)"
dockerd --data-root "$DATA_ROOT" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    --host "unix://$STATE/docker.sock" --iptables=false --ip-masq=false --bridge=none \
    --storage-driver overlay2 >"$STATE/dockerd.log" 2>&1 &
DOCKERD_PID=$!
export DOCKER_HOST=unix://$STATE/docker.sock DOCKER_BUILDKIT=0
for _ in $(seq 120); do "$DOCKER" version >/dev/null 2>&1 && break; sleep 0.5; done
if ! "$DOCKER" version >/dev/null 2>&1; then
    tail -n 20 "$STATE/dockerd.log" >&2
    skip "dockerd did not start (log above)"
fi
timed "start dockerd"

# ---- 3. the local base image: Debian bookworm + this machine's CA certificates -------------------------
shopt -s nullglob
certs=("$CA_DIR"/*.crt)
cert_key=$(cat /dev/null "${certs[@]}" | sha256sum | cut -c1-12)
BASE_TAR=$CACHE/bookworm-minbase-$cert_key.tar
if [[ -f $BASE_TAR ]]; then
    say "loading the cached base $BASE_TAR"
    "$DOCKER" load -q -i "$BASE_TAR" >/dev/null
    timed "docker load (cached base)"
else
    say "debootstrap --variant=minbase bookworm"
    rootfs=$STATE/rootfs
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$STATE/debootstrap.log" >&2; exit 1; }
    # The proxy's CA certificates: in /usr/local/share/ca-certificates, so that the image's own
    # `apt-get install ca-certificates` bundles them, plus the host's bundle for anything before that.
    mkdir -p "$rootfs/usr/local/share/ca-certificates" "$rootfs/etc/ssl/certs"
    ((${#certs[@]})) && cp "${certs[@]}" "$rootfs/usr/local/share/ca-certificates/"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    bundle=/etc/ssl/certs/ca-certificates.crt  # pip < 24.2 trusts only its own bundle unless told
    tar -C "$rootfs" -c . | "$DOCKER" import \
        --change "ENV PIP_CERT=$bundle" --change "ENV SSL_CERT_FILE=$bundle" \
        --change "ENV REQUESTS_CA_BUNDLE=$bundle" --change 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null
    "$DOCKER" save -o "$BASE_TAR.part" "$BASE_TAG" && mv "$BASE_TAR.part" "$BASE_TAR"
    timed "debootstrap + docker import + docker save (base)"
fi

# ---- 4. build, inspect, run ---------------------------------------------------------------------------
say "building $IMAGE (target $LAB of docker/Dockerfile on $BASE_TAG)"
# shellcheck disable=SC2086  # SMOKE_BUILD_ARGS is a list of flags
"$DOCKER" build --network host -f "$ROOT/docker/Dockerfile" --target "$LAB" \
    --build-arg "BASE_IMAGE=$BASE_TAG" $SMOKE_BUILD_ARGS -t "$IMAGE" "$ROOT"
timed "docker build --target $LAB"

say "checking the image"
config=$("$DOCKER" image inspect -f '{{json .Config.Entrypoint}} {{.Config.User}} {{json .Config.Volumes}}' "$IMAGE")
echo "entrypoint user volumes: $config" >&2
[[ $config == "[\"$LAB\"] "* ]] || { echo "FAIL: entrypoint is not [\"$LAB\"]" >&2; exit 1; }
uid=$("$DOCKER" run --rm --network none --entrypoint id "$IMAGE" -u)
[[ $uid != 0 ]] || { echo "FAIL: the container runs as root" >&2; exit 1; }
for volume in /data /runs /cache; do
    [[ $config == *"\"$volume\""* ]] || { echo "FAIL: no volume $volume" >&2; exit 1; }
done
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
echo "image size: $((size / 1000000)) MB; uid in the container: $uid" >&2

say "$LAB --help"
"$DOCKER" run --rm --network none "$IMAGE" --help
timed "docker run $LAB --help"

say "$LAB $SMOKE_ARGS"
runs=$STATE/runs
mkdir -p "$runs" && chown "$uid" "$runs"
# shellcheck disable=SC2086  # SMOKE_ARGS is the lab's argument list
"$DOCKER" run --rm --network none -v "$runs:/runs" "$IMAGE" $SMOKE_ARGS
if [[ -n $SMOKE_EXPECT ]]; then
    [[ -f $runs/$SMOKE_EXPECT ]] || { echo "FAIL: $LAB did not write /runs/$SMOKE_EXPECT" >&2; exit 1; }
    echo "wrote: $(cd "$runs" && find . -type f | sort | tr '\n' ' ')" >&2
fi
timed "docker run $LAB $SMOKE_ARGS"

say "docker-smoke PASSED for $LAB in $((SECONDS - START)) s"
printf '%s\n' "${TIMES[@]}" >&2
