# Shared by docker/build_and_run.sh and docker/build_cuda.sh (sourced, not run): the settings
# both read, a Docker daemon (the one at $DOCKER_HOST, the default socket, or a private dockerd
# started here and stopped on exit), and the local Debian base image built with mmdebstrap from
# this machine's own apt sources (the repository names no package host).
# The sourcing script defines log() and die() first.
# shellcheck shell=bash

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
# The classic builder honours `docker build --network=host` without BuildKit entitlements.
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
STARTED_DOCKERD_PID=

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
dk() { "$DOCKER" "$@"; }
is_root() { [ "$(id -u)" = 0 ]; }
docker_reachable() { dk version >/dev/null 2>&1; }

# Debian packages needed, as command:package pairs; installed when running as root (as
# scripts/setup.sh does for GDAL).
need_packages() {
  local missing=() cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if is_root && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/dev/null || die "apt-get install ${missing[*]} failed"
  else
    die "missing ${missing[*]}: install them (apt-get install ${missing[*]}, as root)"
  fi
}

# Stop the private dockerd this script started, if any (the data root is kept for warm rebuilds).
stop_private_dockerd() {
  [ -n "$STARTED_DOCKERD_PID" ] || return 0
  log "stopping the private dockerd (pid $STARTED_DOCKERD_PID; data kept in $WORK_DIR/data)"
  kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || return 0
    sleep 0.5
  done
  printf 'dockerd %s did not stop in 30 s; killing it\n' "$STARTED_DOCKERD_PID" >&2
  kill -9 "$STARTED_DOCKERD_PID" 2>/dev/null || true
}

# A daemon to talk to: $DOCKER_HOST, the default socket, a private one already listening in
# $WORK_DIR, or a private dockerd started here (root only).
ensure_daemon() {
  mkdir -p "$WORK_DIR"
  if [ "$DOCKER" = docker ] || [ ! -x "$DOCKER" ]; then need_packages docker:docker.io; fi
  if [ -n "${DOCKER_HOST:-}" ]; then
    docker_reachable || die "DOCKER_HOST=$DOCKER_HOST is set but no daemon answers there"
    log "using the daemon at $DOCKER_HOST"
    return 0
  fi
  if docker_reachable; then
    log "using the default Docker daemon"
    return 0
  fi
  local sock="$WORK_DIR/docker.sock"
  export DOCKER_HOST="unix://$sock"
  if docker_reachable; then
    log "using the private daemon already listening at $sock (left running)"
    return 0
  fi
  need_packages dockerd:docker.io
  is_root || die "no Docker daemon reachable, and starting one needs root"
  log "starting a private dockerd (data root $WORK_DIR/data, socket $sock)"
  rm -f "$sock"
  dockerd --iptables=false --ip6tables=false --bridge=none \
    --data-root "$WORK_DIR/data" --exec-root "$WORK_DIR/exec" \
    --pidfile "$WORK_DIR/dockerd.pid" -H "$DOCKER_HOST" \
    >"$WORK_DIR/dockerd.log" 2>&1 &
  STARTED_DOCKERD_PID=$!
  for _ in $(seq 1 120); do
    docker_reachable && return 0
    kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || {
      STARTED_DOCKERD_PID=
      tail -n 20 "$WORK_DIR/dockerd.log" >&2
      die "dockerd exited at start-up (log: $WORK_DIR/dockerd.log)"
    }
    sleep 0.5
  done
  die "dockerd did not answer within 60 s (log: $WORK_DIR/dockerd.log)"
}

# $BASE_IMAGE; the local one is built when missing: Debian bookworm minbase by mmdebstrap from
# this machine's apt sources (APT_SOURCES: other source files), with the host's CA bundle at
# its own path and PIP_CERT pointing at it (HOST_CA_BUNDLE= to leave it out), then imported.
ensure_local_base() {
  if [ "$BASE_IMAGE" != "$LOCAL_BASE" ] || dk image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE"
    return 0
  fi
  need_packages mmdebstrap:mmdebstrap
  is_root || die "$BASE_IMAGE is missing and building it with mmdebstrap needs root"
  local sources=() hooks=() f t0 rootfs="$WORK_DIR/bookworm-rootfs.tar"
  if [ -n "${APT_SOURCES:-}" ]; then
    read -r -a sources <<<"$APT_SOURCES"
  else
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
      [ -s "$f" ] && sources+=("$f")
    done
  fi
  [ "${#sources[@]}" -gt 0 ] || die "no apt sources on this machine for the local base (set APT_SOURCES)"
  log "building $BASE_IMAGE with mmdebstrap (Debian bookworm, minbase) from ${sources[*]}"
  t0=$(now)
  local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
                 --change 'CMD ["bash"]')
  if [ -n "$HOST_CA_BUNDLE" ]; then
    [ -r "$HOST_CA_BUNDLE" ] || die "HOST_CA_BUNDLE=$HOST_CA_BUNDLE is not readable (set it empty to go without)"
    # Its own path: the image's ca-certificates package rewrites /etc/ssl/certs.
    hooks+=(--customize-hook="upload $HOST_CA_BUNDLE /usr/local/share/host-ca-bundle.crt")
    changes+=(--change 'ENV PIP_CERT=/usr/local/share/host-ca-bundle.crt')
  fi
  mmdebstrap --quiet --variant=minbase --include=ca-certificates "${hooks[@]}" bookworm "$rootfs" \
    "${sources[@]}" </dev/null >"$WORK_DIR/mmdebstrap.log" 2>&1 || {
      rm -f "$rootfs"; tail -n 20 "$WORK_DIR/mmdebstrap.log" >&2
      die "mmdebstrap failed (log: $WORK_DIR/mmdebstrap.log)"
    }
  dk import "${changes[@]}" "$rootfs" "$BASE_IMAGE" >/dev/null || { rm -f "$rootfs"; die "docker import failed"; }
  rm -f "$rootfs"
  log "base image $BASE_IMAGE built in $(elapsed "$t0" "$(now)") s"
}
