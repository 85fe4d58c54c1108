#!/usr/bin/env bash
# Build the CUDA image (docker/Dockerfile.cuda) on the local Debian base and check it here.
#
#   docker/build_cuda.sh            # from anywhere; the build context is the repository
#
# The CUDA builds of torch on PyPI carry the CUDA runtime libraries as pip packages (nvidia-*), so
# the image needs no NVIDIA base: the host needs only the NVIDIA driver and container toolkit
# (docker run --gpus all). Steps: (a) use the Docker daemon at $DOCKER_HOST or the default socket,
# or start a private dockerd (data under $L2B_MASK_DOCKER_DIR, shared with build_and_run.sh) and
# stop it at the end; (b) build the local Debian bookworm base with mmdebstrap from this machine's
# own apt sources when it is missing; (c) build docker/Dockerfile.cuda with torch from PyPI,
# timed; (d) check in the image that torch is a CUDA build (torch.version.cuda), and, with no GPU
# visible (this machine, or a run without --gpus), that the demo acquisition with `device: auto`
# falls back to the CPU cleanly: exit 0, nothing on stderr, provenance device "cpu" and the CPU
# kernel; (e) print the image size, build and run times. Exit status 0 only when every check
# passes; otherwise 1 with "build_cuda: FAILED: ..." on stderr.
#
# Environment (all optional):
#   L2B_MASK_DOCKER_DIR  work folder (default /tmp/l2b-mask-docker, as build_and_run.sh)
#   DOCKER_HOST          use this daemon instead of starting one
#   DOCKER               docker client (default /usr/bin/docker when present, else docker)
#   BASE_IMAGE           base of both stages (default localhost/bookworm-base, built here when
#                        missing). The NVIDIA-base variant: see docker/README.md
#   HOST_CA_BUNDLE       CA bundle put into the local base as PIP_CERT (default
#                        /etc/ssl/certs/ca-certificates.crt; set empty to leave it out)
#   IMAGE                image name (default l2b-mask-pge; tagged <version>-cuda)
#   ANCILLARY_DIR        delivered ancillary folder (default <repo>/ancillary/spectf_cloud)
#   EXTRA_BUILD_ARGS     more `docker build` arguments, e.g. "--build-arg TORCH_VERSION=..."
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK_DIR=${L2B_MASK_DOCKER_DIR:-/tmp/l2b-mask-docker}
if [ -z "${DOCKER:-}" ]; then
  if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
LOCAL_BASE=localhost/bookworm-base
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
IMAGE=${IMAGE:-l2b-mask-pge}
ANCILLARY_DIR=${ANCILLARY_DIR:-$REPO/ancillary/spectf_cloud}
HOST_CA_BUNDLE=${HOST_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}   # the classic builder honours --network=host

STARTED_DOCKERD_PID=
log() { printf 'build_cuda: %s\n' "$*"; }
die() { printf 'build_cuda: FAILED: %s\n' "$*" >&2; exit 1; }
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
dk() { "$DOCKER" "$@"; }
docker_reachable() { dk version >/dev/null 2>&1; }

cleanup() {
  local status=$?
  if [ -n "$STARTED_DOCKERD_PID" ]; then
    log "stopping the private dockerd (pid $STARTED_DOCKERD_PID; data kept in $WORK_DIR/data)"
    kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# (a) a Docker daemon ----------------------------------------------------------------------------
mkdir -p "$WORK_DIR"
[ -d "$ANCILLARY_DIR" ] || die "ancillary folder $ANCILLARY_DIR not found (set ANCILLARY_DIR)"
command -v "$DOCKER" >/dev/null || die "no docker client ($DOCKER): apt-get install docker.io"
if [ -n "${DOCKER_HOST:-}" ]; then
  docker_reachable || die "DOCKER_HOST=$DOCKER_HOST is set but no daemon answers there"
elif ! docker_reachable; then
  export DOCKER_HOST="unix://$WORK_DIR/docker.sock"
  if ! docker_reachable; then
    command -v dockerd >/dev/null || die "no Docker daemon reachable and no dockerd: apt-get install docker.io"
    [ "$(id -u)" = 0 ] || die "no Docker daemon reachable, and starting one needs root"
    log "starting a private dockerd (data root $WORK_DIR/data)"
    rm -f "$WORK_DIR/docker.sock"
    dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$WORK_DIR/data" \
      --exec-root "$WORK_DIR/exec" --pidfile "$WORK_DIR/dockerd.pid" -H "$DOCKER_HOST" \
      >"$WORK_DIR/dockerd.log" 2>&1 &
    STARTED_DOCKERD_PID=$!
    for _ in $(seq 1 120); do docker_reachable && break; sleep 0.5; done
    docker_reachable || die "dockerd did not answer within 60 s (log: $WORK_DIR/dockerd.log)"
  fi
fi
log "daemon: ${DOCKER_HOST:-default socket}"

# (b) the base image, from this machine's own apt sources -----------------------------------------
if [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && ! dk image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null || die "$BASE_IMAGE is missing and mmdebstrap is not installed"
  sources=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && sources+=("$f")
  done
  [ ${#sources[@]} -gt 0 ] || die "no apt sources on this machine to build $BASE_IMAGE from"
  hooks=() changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
  if [ -n "$HOST_CA_BUNDLE" ]; then
    hooks+=(--customize-hook="upload $HOST_CA_BUNDLE /usr/local/share/host-ca-bundle.crt")
    changes+=(--change 'ENV PIP_CERT=/usr/local/share/host-ca-bundle.crt')
  fi
  log "building $BASE_IMAGE with mmdebstrap from ${sources[*]}"
  mmdebstrap --quiet --variant=minbase --include=ca-certificates "${hooks[@]}" bookworm \
    "$WORK_DIR/rootfs.tar" "${sources[@]}" </dev/null >"$WORK_DIR/mmdebstrap.log" 2>&1 ||
    die "mmdebstrap failed (log: $WORK_DIR/mmdebstrap.log)"
  dk import "${changes[@]}" "$WORK_DIR/rootfs.tar" "$BASE_IMAGE" >/dev/null || die "docker import failed"
  rm -f "$WORK_DIR/rootfs.tar"
fi
log "base image $BASE_IMAGE"

# (c) the CUDA image ---------------------------------------------------------------------------------
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -n 1)
COMMIT=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)
if [ -n "$COMMIT" ] && [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]; then COMMIT="$COMMIT-dirty"; fi
TAG="$IMAGE:$VERSION-cuda"
read -r -a extra <<<"${EXTRA_BUILD_ARGS:-}"
log "building $TAG from docker/Dockerfile.cuda (torch's CUDA wheels from PyPI, ~3 GB); log: $WORK_DIR/build-cuda.log"
t0=$(now)
dk build --network=host -f "$REPO/docker/Dockerfile.cuda" -t "$TAG" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "VERSION=$VERSION" --build-arg "GIT_COMMIT=$COMMIT" "${extra[@]}" "$REPO" \
  >"$WORK_DIR/build-cuda.log" 2>&1 || { tail -n 30 "$WORK_DIR/build-cuda.log" >&2; die "docker build failed"; }
BUILD_S=$(elapsed "$t0" "$(now)")

# (d) checks -------------------------------------------------------------------------------------------
cuda=$(dk run --rm --network=none --entrypoint python "$TAG" -I -c \
  'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())') ||
  die "torch does not import in $TAG"
read -r torch_version cuda_version gpu <<<"$cuda"
if [ "$cuda_version" = None ] || [ -z "$cuda_version" ]; then die "torch $torch_version in $TAG is not a CUDA build"; fi
log "torch $torch_version, CUDA $cuda_version, GPU visible: $gpu"

user=$(dk image inspect --format '{{.Config.User}}' "$TAG")
anc_root=$(dk image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$TAG" |
           sed -n 's/^L2B_MASK_ANCILLARY_DIR=//p')
OUT="$WORK_DIR/demo-cuda"
rm -rf "$OUT" && mkdir -p "$OUT/data"
chown "$user" "$OUT/data" 2>/dev/null || chmod 0777 "$OUT/data"
ANCILLARY_DIR=$(cd "$ANCILLARY_DIR" && pwd)
t0=$(now)
set +e
dk run --rm --network=none -v "$ANCILLARY_DIR:$anc_root/$(basename "$ANCILLARY_DIR"):ro" \
  -v "$OUT/data:/data/out" --entrypoint l2b-mask-demo "$TAG" --folder /data/out \
  >"$OUT/demo.stdout" 2>"$OUT/demo.stderr"
rc=$?
set -e
RUN_S=$(elapsed "$t0" "$(now)")
[ "$rc" -eq 0 ] || { cat "$OUT/demo.stderr" >&2; die "the demo exited with $rc (output in $OUT)"; }
[ ! -s "$OUT/demo.stderr" ] || { cat "$OUT/demo.stderr" >&2; die "the demo wrote to stderr"; }
provenance=("$OUT"/data/products/*_provenance.json)
[ -f "${provenance[0]}" ] || die "no provenance record in $OUT/data/products"
python3 - "${provenance[0]}" "$gpu" <<'PY' || die "provenance check"
import json
import sys

record = json.load(open(sys.argv[1]))
p = record["processing"]
expected = "cuda" if sys.argv[2] == "True" else "cpu"
if not str(p.get("device", "")).startswith(expected):
    sys.exit(f"device {p.get('device')!r}, expected {expected} (device: auto)")
if expected == "cpu" and not p.get("implementation", "").startswith("cpu kernel"):
    sys.exit(f"the CPU fallback did not use the compiled kernel: {p.get('implementation')!r}")
print(f"build_cuda: device: auto ran on {p['device']}: {p.get('implementation')}")
PY

# (e) figures ----------------------------------------------------------------------------------------
SIZE=$(dk image inspect --format '{{.Size}}' "$TAG")
log "figures ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores):"
log "  image        $TAG"
log "  image size   $SIZE bytes ($(awk -v s="$SIZE" 'BEGIN { printf "%.2f", s / 1e9 }') GB)"
log "  build time   $BUILD_S s"
log "  demo run     $RUN_S s (docker run, 128 x 128 synthetic acquisition, no GPU visible: $([ "$gpu" = True ] && echo no || echo yes))"
log "OK"
