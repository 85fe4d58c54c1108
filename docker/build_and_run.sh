#!/usr/bin/env bash
# Build the CPU image and run the demo acquisition in it, then check its products on the host.
#
#   docker/build_and_run.sh            # from anywhere; the build context is the repository
#
# Steps: (a) use the Docker daemon at $DOCKER_HOST or the default socket, or start a private
# dockerd (data under $L2B_MASK_DOCKER_DIR) and stop it at the end; (b) build the local Debian
# bookworm base image with mmdebstrap + `docker import` when it is missing; (c) build
# docker/Dockerfile, tagged with the version and the git commit, timed; (d) run `l2b-mask-demo`
# in the container as its non-root user, the ancillary folder mounted read-only, an output
# folder writable, no network; (e) check exit code, empty stderr, every product file, the
# provenance checksums (with the host's .venv), the provenance's commit/version/interpreter, and
# that the container uses the compiled SpecTf kernel; (f) print image size, build and run times.
# Exit status 0 only when every check passes; otherwise 1 with "build_and_run: FAILED: ..." on
# stderr.
#
# Environment (all optional):
#   L2B_MASK_DOCKER_DIR  work folder: private daemon's data/exec roots, socket, logs, demo output
#                        (default /tmp/l2b-mask-docker; kept for warm rebuilds)
#   DOCKER_HOST          use this daemon instead of starting one
#   DOCKER               docker client (default /usr/bin/docker when present, else docker)
#   BASE_IMAGE           base of both stages (default localhost/bookworm-base, built here when
#                        missing; any other name is used, and pulled, as it is)
#   APT_SOURCES          apt source files for the local base, space-separated (default: this
#                        machine's own, /etc/apt/sources.list and sources.list.d/*.list|*.sources)
#   HOST_CA_BUNDLE       CA bundle put into the local base as PIP_CERT, for pip behind a
#                        TLS-intercepting proxy (default /etc/ssl/certs/ca-certificates.crt; set
#                        empty to leave it out)
#   IMAGE                image name (default l2b-mask-pge)
#   TORCH_INDEX_URL      passed to the build when set (may be empty); otherwise a CPU torch wheel
#                        in .whl/ or in WHEEL_SOURCES is used when download.pytorch.org is unreachable
#   WHEEL_SOURCES        folders searched for torch-<version>+cpu-*.whl (default: $PIP_FIND_LINKS
#                        folders, then /opt/wheels)
#   ANCILLARY_DIR        delivered ancillary folder (default <repo>/ancillary/spectf_cloud)
#   PYTHON               host interpreter with the package (default <repo>/.venv/bin/python)
#   NO_CACHE=1           build without the layer cache (cold-build timing)
#   VERBOSE=1            stream the build log (always written to $L2B_MASK_DOCKER_DIR/build.log)
set -euo pipefail

log() { printf 'build_and_run: %s\n' "$*"; }
die() { printf 'build_and_run: FAILED: %s\n' "$*" >&2; exit 1; }
# shellcheck source=docker/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CREATED_WHEEL=
CREATED_WHEEL_DIR=

cleanup() {
  local status=$?
  if [ -n "$CREATED_WHEEL" ]; then rm -f "$CREATED_WHEEL"; fi
  if [ -n "$CREATED_WHEEL_DIR" ]; then rmdir "$CREATED_WHEEL_DIR" 2>/dev/null || true; fi
  stop_private_dockerd
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# (a) a Docker daemon, (b) the base image (docker/lib.sh)
[ -x "$PYTHON" ] || die "host interpreter $PYTHON not found (run scripts/setup.sh or set PYTHON)"
[ -d "$ANCILLARY_DIR" ] || die "ancillary folder $ANCILLARY_DIR not found (set ANCILLARY_DIR)"
ensure_daemon
ensure_local_base

# ---------------------------------------------------------------------------------------------
# (c) the CPU image
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -n 1)
[ -n "$VERSION" ] || die "no version in pyproject.toml"
COMMIT=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || true)
TAG_SUFFIX=nogit
if [ -n "$COMMIT" ]; then
  TAG_SUFFIX="g${COMMIT:0:12}"
  # Local changes go into the image too: say so in the tag and in the recorded commit.
  if [ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]; then
    COMMIT="$COMMIT-dirty" TAG_SUFFIX="$TAG_SUFFIX-dirty"
  fi
fi
SOURCE_URL=$(git -C "$REPO" remote get-url origin 2>/dev/null || true)
TAG="$IMAGE:$VERSION-$TAG_SUFFIX"

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION"
            --build-arg "GIT_COMMIT=$COMMIT" --build-arg "SOURCE_URL=$SOURCE_URL")
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' "$REPO/docker/Dockerfile" | head -n 1)
if [ -n "${TORCH_INDEX_URL+set}" ]; then
  build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
else
  wheel_glob="torch-${TORCH_VERSION}+cpu-*.whl"
  have_wheel=
  for whl in "$REPO"/.whl/$wheel_glob; do
    if [ -f "$whl" ]; then have_wheel=$whl; break; fi
  done
  if [ -z "$have_wheel" ] && ! curl -fsS -o /dev/null --max-time 15 https://download.pytorch.org/whl/cpu/ 2>/dev/null; then
    IFS=' ' read -r -a sources <<<"${WHEEL_SOURCES:-${PIP_FIND_LINKS:-} /opt/wheels}"
    for dir in "${sources[@]}"; do
      dir=${dir#file://}
      for whl in "$dir"/$wheel_glob; do
        [ -f "$whl" ] || continue
        [ -d "$REPO/.whl" ] || { mkdir "$REPO/.whl"; CREATED_WHEEL_DIR="$REPO/.whl"; }
        CREATED_WHEEL="$REPO/.whl/$(basename "$whl")"
        ln "$whl" "$CREATED_WHEEL" 2>/dev/null || cp "$whl" "$CREATED_WHEEL"
        have_wheel=$CREATED_WHEEL
        break 2
      done
    done
    [ -n "$have_wheel" ] || die "download.pytorch.org is unreachable and no $wheel_glob was found in .whl/ or ${sources[*]}; put one in $REPO/.whl/ or set TORCH_INDEX_URL"
  fi
  if [ -n "$have_wheel" ]; then
    log "torch from the wheelhouse: $(basename "$have_wheel") (TORCH_INDEX_URL empty: PyPI for the rest)"
    build_args+=(--build-arg "TORCH_INDEX_URL=")
  fi
fi
cache_args=()
if [ "${NO_CACHE:-0}" = 1 ]; then cache_args=(--no-cache); fi

log "building $TAG (and $IMAGE:$VERSION) from docker/Dockerfile; log: $WORK_DIR/build.log"
t0=$(now)
build_cmd=(dk build --network=host "${cache_args[@]}" -f "$REPO/docker/Dockerfile"
           -t "$TAG" -t "$IMAGE:$VERSION" "${build_args[@]}" "$REPO")
if [ "${VERBOSE:-0}" = 1 ]; then
  "${build_cmd[@]}" 2>&1 | tee "$WORK_DIR/build.log" || die "docker build failed (log: $WORK_DIR/build.log)"
else
  "${build_cmd[@]}" >"$WORK_DIR/build.log" 2>&1 || {
    tail -n 40 "$WORK_DIR/build.log" >&2
    die "docker build failed (log: $WORK_DIR/build.log)"
  }
fi
BUILD_S=$(elapsed "$t0" "$(now)")
log "built $TAG in $BUILD_S s"

# ---------------------------------------------------------------------------------------------
# (d) the demo acquisition in the container
user=$(dk image inspect --format '{{.Config.User}}' "$TAG")
case "${user%%:*}" in
  "" | 0 | root) die "$TAG runs as root (USER '$user'); it must name a non-root user" ;;
esac
anc_root=$(dk image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$TAG" |
           sed -n 's/^L2B_MASK_ANCILLARY_DIR=//p')
[ -n "$anc_root" ] || die "$TAG sets no L2B_MASK_ANCILLARY_DIR"
# The model specification names its files relative to its folder: spectf_cloud/...
ANC_MOUNT="$anc_root/$(basename "$ANCILLARY_DIR")"
ANCILLARY_DIR=$(cd "$ANCILLARY_DIR" && pwd)
unreadable=$(find "$ANCILLARY_DIR" ! -perm -o=r -print -quit)
[ -z "$unreadable" ] || die "$unreadable is not world-readable; the container's user cannot read it"

OUT="$WORK_DIR/demo"
rm -rf "$OUT"
mkdir -p "$OUT/data"
run_as=()
if is_root; then
  chown "$user" "$OUT/data"      # the image's own non-root user writes the products
else
  run_as=(--user "$(id -u):$(id -g)")
fi
run_args=(--rm --network=none "${run_as[@]}"
          -v "$ANCILLARY_DIR:$ANC_MOUNT:ro" -v "$OUT/data:/data/out")

log "running l2b-mask-demo in $TAG as user ${run_as[1]:-$user}, ancillary at $ANC_MOUNT (read-only)"
t0=$(now)
set +e
dk run "${run_args[@]}" --entrypoint l2b-mask-demo "$TAG" --folder /data/out \
  >"$OUT/demo.stdout" 2>"$OUT/demo.stderr"
rc=$?
set -e
RUN_S=$(elapsed "$t0" "$(now)")

# ---------------------------------------------------------------------------------------------
# (e) checks
[ "$rc" -eq 0 ] || {
  tail -n 5 "$OUT/demo.stdout" >&2; cat "$OUT/demo.stderr" >&2
  die "the demo exited with $rc (stdout/stderr in $OUT)"
}
[ ! -s "$OUT/demo.stderr" ] || { cat "$OUT/demo.stderr" >&2; die "the demo wrote to stderr ($OUT/demo.stderr)"; }
PRODUCTS="$OUT/data/products"
provenance=("$PRODUCTS"/*_provenance.json)
if [ ${#provenance[@]} -ne 1 ] || [ ! -f "${provenance[0]}" ]; then
  die "expected one *_provenance.json in $PRODUCTS"
fi
STEM=$(basename "${provenance[0]}" _provenance.json)
for suffix in .img .hdr .nc .png .cmr.json _metadata.json _stac.json _provenance.json _pge.log _ortho.tif _ortho_prob.tif _ortho_buffer.tif _ortho_shadow.tif; do
  [ -s "$PRODUCTS/$STEM$suffix" ] || die "product $STEM$suffix is missing or empty in $PRODUCTS"
done
log "products present: $STEM.{img,hdr,nc,png,cmr.json} + _metadata.json _stac.json _provenance.json _pge.log _ortho{,_prob,_buffer,_shadow}.tif"

"$PYTHON" - "$STEM" "$PRODUCTS" "$OUT/demo.stdout" "${COMMIT:-}" "$VERSION" <<'EOF' || die "product validation failed"
import json
import sys
from pathlib import Path

from pge.manifest import product_problem
from pge.sds.files import product_files

stem, folder, stdout, commit, version = sys.argv[1:6]
files = product_files(stem, Path(folder))
problems = []
if (p := product_problem(files)) is not None:
    problems.append(f"provenance checksums: {p}")
status = [json.loads(line) for line in Path(stdout).read_text().splitlines()
          if line.startswith('{"status"')]
if len(status) != 1 or status[0].get("status") != "success" or status[0].get("exit_code") != 0:
    problems.append(f"PGE status line: {status}")
record = json.loads(files.provenance.read_text())
gen = record["product_generation"]
if gen.get("git_commit") != (commit or None):
    problems.append(f"provenance git_commit {gen.get('git_commit')!r}, built from {commit!r}")
if gen.get("version") != version:
    problems.append(f"provenance version {gen.get('version')!r}, image {version!r}")
exe = record.get("host", {}).get("python_executable", "")
if not exe.startswith("/opt/venv/"):
    problems.append(f"provenance python_executable {exe!r} is not the image's /opt/venv")
meta = json.loads(files.metadata.read_text())
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
t = record.get("timings_s", {})
print(f"build_and_run: provenance checksums OK ({len(record['outputs'])} outputs); "
      f"device {record['processing']['device']}, torch {record['software'].get('torch')}, "
      f"commit {gen.get('git_commit')}; PGE steps {sum(t.values()):.1f} s (run {t.get('run', 0):.1f} s); "
      f"cloud fraction {status[0].get('cloud_fraction_percent')} %")
EOF

kernel_check='
import json
from l2b_mask import kernels
from l2b_mask.kernels import selection
from l2b_mask.algorithm.inference import CloudModel, InferenceSettings
from l2b_mask.spec import ModelSpec
model = CloudModel.load(ModelSpec.load(), InferenceSettings())   # the demo settings: auto, float32
print(json.dumps({"available": selection.available(), "reason": selection.unavailable_reason(),
                  "library": str(kernels.library_path()), "compiler": kernels.compiler(),
                  "device": str(model.device), "uses_kernel": model.model.uses_kernel(model.device)}))
'
set +e
kernel_json=$(dk run "${run_args[@]}" --entrypoint python "$TAG" -I -c "$kernel_check" 2>"$OUT/kernel.stderr")
rc=$?
set -e
if [ "$rc" -ne 0 ] || [ -s "$OUT/kernel.stderr" ]; then
  cat "$OUT/kernel.stderr" >&2
  die "the kernel check in the container failed (exit $rc, stderr $OUT/kernel.stderr)"
fi
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  "$PYTHON" - "$kernel_json" "$PRODUCTS/${STEM}_pge.log" <<'EOF' || die "kernel check"
import json
import sys

k = json.loads(sys.argv[1])
if not (k["available"] and k["uses_kernel"] and k["library"].startswith("/opt/venv/")):
    sys.exit(f"the SpecTf kernel is not used in the container: {k}")
# The demo's own run: l2b_mask.kernels logs a warning when it falls back to the torch path.
with open(sys.argv[2], encoding="utf-8") as f:
    for line in f:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("logger") == "l2b_mask.kernels" and event.get("level") != "info":
            sys.exit(f"the demo did not use the SpecTf kernel: {event.get('event')}")
library, compiler = k["library"], k["compiler"]
print(f"build_and_run: SpecTf AVX2 kernel used in the container ({library}, built in the build "
      f"stage; C++ compiler in the runtime image: {compiler})")
EOF
else
  log "this CPU lacks AVX2/FMA: the container uses the torch path ($kernel_json)"
fi

# Housekeeping, on the private daemon only: each commit's image adds a ~1 GB venv layer, so
# drop this image's tags of other commits and the untagged images they leave (the build
# stage's untagged images stay: they are the layer cache). KEEP_OLD_IMAGES=1 keeps them.
if [ "${DOCKER_HOST:-}" = "unix://$WORK_DIR/docker.sock" ] && [ "${KEEP_OLD_IMAGES:-0}" != 1 ]; then
  old_tags=$(dk image ls --format '{{.Repository}}:{{.Tag}}' "$IMAGE" | grep -F "$IMAGE:$VERSION-g" |
             grep -vxF "$TAG" || true)
  if [ -n "$old_tags" ]; then
    # shellcheck disable=SC2086  # one tag per word
    dk rmi $old_tags >/dev/null || log "could not remove old tags: $old_tags"
  fi
  dk image prune -f --filter "label=org.opencontainers.image.title=l2b-mask-pge" >/dev/null ||
    log "could not prune untagged $IMAGE images"
fi

# ---------------------------------------------------------------------------------------------
# (f) figures
SIZE=$(dk image inspect --format '{{.Size}}' "$TAG")
SIZE_MB=$(awk -v s="$SIZE" 'BEGIN { printf "%.0f", s / 1e6 }')
log "figures ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)):"
log "  image        $TAG = $IMAGE:$VERSION"
log "  image size   $SIZE bytes ($SIZE_MB MB)"
log "  build time   $BUILD_S s$([ "${NO_CACHE:-0}" = 1 ] && printf ' (no cache)')"
log "  demo run     $RUN_S s (docker run wall clock, 128 x 128 synthetic acquisition)"
log "  products     $PRODUCTS"
log "OK"
