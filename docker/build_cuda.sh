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

log() { printf 'build_cuda: %s\n' "$*"; }
die() { printf 'build_cuda: FAILED: %s\n' "$*" >&2; exit 1; }
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
  local status=$?
  stop_private_dockerd
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# (a) a Docker daemon, (b) the base image (docker/lib.sh) ------------------------------------------
[ -d "$ANCILLARY_DIR" ] || die "ancillary folder $ANCILLARY_DIR not found (set ANCILLARY_DIR)"
ensure_daemon
ensure_local_base

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
