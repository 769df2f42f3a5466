# shellcheck shell=bash
# Shared functions for scripts/bootstrap, scripts/test and scripts/local-env.
# Everything here is idempotent: a second call finds the work done and returns quickly.
#
# Caches live outside the checkout so that fresh clones (CI) reuse them:
#   APES_CACHE (default /var/cache/apes-infra as root, ~/.cache/apes-infra otherwise)
#     venv-<lane>-<hash>/ the pinned tools of each lane (requirements-<lane>.txt + requirements-tools.txt)
#     pip/                pip's download cache
#     images/             base image root filesystems as tarballs, keyed by build inputs
#     apt-cacher-ng/      .deb cache shared by every test container (through a local proxy)
#     go/                 Go module and build caches (collector builds)
#     tools/              single binaries from Debian's packages for the tests (promtool-<version>/)
#     logs/               one directory per test run

set -euo pipefail

APES_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $(id -u) -eq 0 ]]; then
  APES_CACHE="${APES_CACHE:-/var/cache/apes-infra}"
else
  APES_CACHE="${APES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/apes-infra}"
fi
export APES_ROOT APES_CACHE
APES_PYTHON="${APES_PYTHON:-python3}"
APES_DEBIAN_MIRROR="${APES_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
APES_APT_PROXY_PORT="${APES_APT_PROXY_PORT:-3142}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Serializes a command against every other apes.infra script on this machine that takes the
# same lock (a file under APES_CACHE/locks): parallel steps and concurrent commands wait
# instead of racing.   with_lock NAME COMMAND...
with_lock() {
  local name="$1" fd
  shift
  mkdir -p "$APES_CACHE/locks"
  exec {fd}>"$APES_CACHE/locks/$name.lock"
  flock "$fd"
  local rc=0
  "$@" || rc=$?
  exec {fd}>&-
  return "$rc"
}

# apt and dpkg wait for each other's lock instead of failing on it (another apt-get of ours,
# unattended-upgrades, an operator's shell).
APES_APT_LOCK_TIMEOUT="${APES_APT_LOCK_TIMEOUT:-600}"
apt_get() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$APES_APT_LOCK_TIMEOUT" "$@"
}

_apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} from Debian's archive"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install() {
  # Installs Debian packages on this (controller) machine when missing; one apt at a time.
  with_lock apt _apt_install "$@"
}

hash_of() { cat "$@" | sha256sum | cut -c1-12; }

# Starts a long-running daemon detached from this script: its own session, and none of our
# file descriptors (a lock held by with_lock must not live on in the daemon).
daemonize() {
  local close_fds="for f in /proc/\$\$/fd/*; do n=\${f##*/}; [[ \$n -gt 2 ]] && eval \"exec \$n>&-\"; done"
  as_root setsid --fork bash -c "$close_fds; exec \"\$@\"" daemon "$@" </dev/null >>"$APES_CACHE/daemons.log" 2>&1
}

# --- Python virtual environments with the pinned tools, one per lane ------------------------
# A lane is one ansible-core release line with the collections of its `ansible` package, on a
# Python that release supports on the controller (README, "Lanes"):
#   2.19   requirements-2.19.txt   the machine's python3 (APES_PYTHON), 3.11 to 3.13
#   2.21   requirements-2.21.txt   Python 3.12 to 3.14: python3 when new enough (Debian 13),
#                                  else python3.13 or python3.12 on PATH (APES_PYTHON_2_21 overrides)
# Both add requirements-tools.txt. ensure_venv enters the newest lane this machine can run;
# ensure_lanes prepares every lane for the test suite and records why a lane cannot run.
APES_LANES="2.19 2.21"

_lane_var() { echo "${1//./_}"; }   # 2.21 -> 2_21, for variable names

_path_without_venvs() {
  # PATH without our own virtual environments: a lane's Python is never another lane's venv.
  local dir dirs out=()
  IFS=: read -ra dirs <<<"$PATH"
  for dir in "${dirs[@]}"; do
    [[ "$dir" == "$APES_CACHE"/venv-* ]] || out+=("$dir")
  done
  (IFS=:; echo "${out[*]}")
}

_python_candidates() {
  # Absolute paths of the interpreters NAME... on PATH, in order. A pyenv shim runs only the
  # versions pyenv has selected; when it refuses, the interpreters it stands for are used.
  local name path
  for name in "$@"; do
    path="$(PATH="$(_path_without_venvs)" command -v "$name" 2>/dev/null)" || continue
    if [[ "$path" == */shims/* ]] && ! "$path" -c '' >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
      # No version of pyenv has NAME: nothing to offer, the next name is tried.
      pyenv whence --path "$name" 2>/dev/null || true
    else
      echo "$path"
    fi
  done
}

# _lane_python LANE: sets APES_LANE_PYTHON to the interpreter for LANE, or returns 1 with the
# reason in APES_LANE_REASON. Looked up once per lane and shell (pyenv shims are slow to start).
declare -gA __apes_lane_python=() __apes_lane_reason=()
_lane_python() {
  if [[ -n "${__apes_lane_python[$1]:-}" ]]; then APES_LANE_PYTHON="${__apes_lane_python[$1]}"; return 0; fi
  if [[ -n "${__apes_lane_reason[$1]:-}" ]]; then APES_LANE_REASON="${__apes_lane_reason[$1]}"; return 1; fi
  if _find_lane_python "$1"; then __apes_lane_python[$1]="$APES_LANE_PYTHON"; return 0; fi
  __apes_lane_reason[$1]="$APES_LANE_REASON"
  return 1
}

_find_lane_python() {
  local lane="$1" min max names=() cand ver tried=()
  case "$lane" in
    2.19) min=11 max=13; names=("$APES_PYTHON") ;;
    2.21) min=12 max=14; read -ra names <<<"${APES_PYTHON_2_21:-python3 python3.13 python3.12}" ;;
    *) die "unknown lane $lane (lanes: $APES_LANES)" ;;
  esac
  while read -r cand; do
    [[ -n "$cand" ]] || continue
    if ! ver="$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
      tried+=("$cand (does not run)")
    elif [[ "${ver%%.*}" == 3 && "${ver#*.}" -ge $min && "${ver#*.}" -le $max ]]; then
      APES_LANE_PYTHON="$cand"
      return 0
    else
      tried+=("$cand is $ver")
    fi
  done < <(_python_candidates "${names[@]}")
  [[ ${#tried[@]} -gt 0 ]] || tried=("no ${names[*]} on PATH")
  APES_LANE_REASON="ansible-core $lane needs Python 3.$min to 3.$max: ${tried[0]}"
  for cand in "${tried[@]:1}"; do APES_LANE_REASON+="; $cand"; done
  return 1
}

_venv_path() {  # _venv_path LANE PYTHON
  echo "$APES_CACHE/venv-$1-$(hash_of "$APES_ROOT/requirements-$1.txt" "$APES_ROOT/requirements-tools.txt" \
    <("$2" -c 'import sys; print(sys.version)'))"
}

_create_venv() {  # _create_venv VENV LANE PYTHON
  local venv="$1" lane="$2" python="$3"
  [[ -f "$venv/.complete" ]] && return 0
  log "creating virtual environment $venv (ansible-core $lane, $("$python" -V 2>&1))"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --cache-dir "$APES_CACHE/pip" \
    -r "$APES_ROOT/requirements-$lane.txt"
  touch "$venv/.complete"
}

# _lane_venv LANE: creates the lane's virtual environment when missing; sets APES_LANE_VENV, or
# returns 1 with the reason in APES_LANE_REASON when this machine has no Python for the lane.
_lane_venv() {
  local venv
  _lane_python "$1" || return 1
  mkdir -p "$APES_CACHE"
  venv="$(_venv_path "$1" "$APES_LANE_PYTHON")"
  [[ -f "$venv/.complete" ]] || with_lock venv _create_venv "$venv" "$1" "$APES_LANE_PYTHON"
  APES_LANE_VENV="$venv"
}

# enter_lane LANE: enters LANE's virtual environment (PATH, VIRTUAL_ENV, APES_VENV, APES_LANE),
# creating it when missing.
enter_lane() {
  _lane_venv "$1" || die "$APES_LANE_REASON"
  APES_VENV="$APES_LANE_VENV"
  APES_LANE="$1"
  VIRTUAL_ENV="$APES_VENV"
  PATH="$APES_VENV/bin:$(_path_without_venvs)"
  export APES_VENV APES_LANE VIRTUAL_ENV PATH
}

# ensure_venv: enters the newest lane this machine has a Python for.
ensure_venv() {
  local lane="" candidate newest="${APES_LANES##* }"
  for candidate in $APES_LANES; do
    _lane_python "$candidate" && lane="$candidate"
  done
  [[ -n "$lane" ]] || die "no lane can run here: $APES_LANE_REASON"
  [[ "$lane" == "$newest" ]] || log "using the ansible-core $lane lane: the $newest lane cannot run here ($APES_LANE_REASON)"
  enter_lane "$lane"
}

# ensure_lanes: every lane's virtual environment, for the test suite: APES_VENV_<lane> for a lane
# that can run, APES_LANE_NOT_RUN_<lane> (the reason) for one that cannot. Then enters the newest.
ensure_lanes() {
  local lane var
  for lane in $APES_LANES; do
    var="$(_lane_var "$lane")"
    unset "APES_VENV_$var" "APES_LANE_NOT_RUN_$var"
    if _lane_venv "$lane"; then
      export "APES_VENV_$var=$APES_LANE_VENV"
    else
      log "the ansible-core $lane lane does not run here: $APES_LANE_REASON"
      export "APES_LANE_NOT_RUN_$var=$APES_LANE_REASON"
    fi
  done
  export APES_LANES
  ensure_venv
}

# --- Docker engine -----------------------------------------------------------------------------
_start_docker() {
  docker info >/dev/null 2>&1 && return 0
  if [[ -d /run/systemd/system ]]; then
    log "starting the Docker engine with systemd"
    as_root systemctl start docker
  else
    # No systemd on this machine (PID 1 is something else): run dockerd in the background.
    log "starting dockerd in the background (log: $APES_CACHE/dockerd.log)"
    daemonize bash -c "exec dockerd >>'$APES_CACHE/dockerd.log' 2>&1"
  fi
  local _try
  for _try in $(seq 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  [[ -f "$APES_CACHE/dockerd.log" ]] && tail -n 20 "$APES_CACHE/dockerd.log" >&2
  die "the Docker engine did not answer within 60 s"
}

ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  mkdir -p "$APES_CACHE"
  with_lock docker _start_docker
}

docker_bridge_ip() {
  # The host's address on Docker's default bridge (docker0), where test containers find the
  # apt proxy. Docker 20.10 does not always record the gateway in the network's IPAM config.
  local ip
  # Empty when not recorded: the docker0 lookup below takes over.
  ip="$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null || true)"
  if [[ -z "$ip" ]]; then
    ip="$(ip -4 -o addr show dev docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"
  fi
  echo "$ip"
}

# --- apt cache for test containers: apt-cacher-ng on the docker0 address ----------------------
_apt_proxy_answers() { (exec 3<>"/dev/tcp/$1/$APES_APT_PROXY_PORT") 2>/dev/null; }

_start_apt_proxy() {
  local ip="$1" dir="$APES_CACHE/apt-cacher-ng"
  _apt_proxy_answers "$ip" && return 0
  as_root mkdir -p "$dir/cache" "$dir/log" "$dir/run" "$dir/conf"
  as_root chown -R apt-cacher-ng: "$dir"
  log "starting apt-cacher-ng on $ip:$APES_APT_PROXY_PORT (cache: $dir/cache)"
  # Our own configuration, not the package's: its Debian backend list points at mirrors that may
  # be unreachable (ftp.debian.org); without remapping, every URL is cached as requested.
  # Bound to loopback and the docker0 address only: containers on any Docker network reach the
  # host's docker0 address through INPUT, nothing outside this machine can.
  as_root tee "$dir/conf/acng.conf" >/dev/null <<CONF
CacheDir: $dir/cache
LogDir: $dir/log
SupportDir: /usr/lib/apt-cacher-ng
PidFile: $dir/run/pid
SocketPath: $dir/run/socket
Port: $APES_APT_PROXY_PORT
BindAddress: 127.0.0.1 $ip
ExThreshold: 30
ForeGround: 1
CONF
  daemonize runuser -u apt-cacher-ng -- /usr/sbin/apt-cacher-ng -c "$dir/conf"
  local _try
  for _try in $(seq 40); do
    _apt_proxy_answers "$ip" && return 0
    sleep 0.5
  done
  die "apt-cacher-ng did not start; see $dir/log"
}

ensure_apt_proxy() {
  local ip
  ip="$(docker_bridge_ip)"
  [[ -n "$ip" ]] || die "cannot read the address of Docker's default bridge"
  _apt_proxy_answers "$ip" && return 0
  with_lock apt-proxy _start_apt_proxy "$ip"
}

# --- systemd base images (debootstrap, cached) ---------------------------------------------------
# Packages a real Debian server has; roles install what they need themselves.
APES_IMAGE_PACKAGES="python3,python3-apt,systemd,systemd-sysv,dbus,procps,iproute2,ca-certificates,sudo,acl,netbase,less"

image_inputs_hash() {
  hash_of "$APES_ROOT/images/customize.sh" <(echo "$1 $APES_IMAGE_PACKAGES $(docker_bridge_ip)")
}

_image_current() {
  # _image_current TAG WANT: the image exists and was built from these inputs.
  [[ "$(docker image inspect -f '{{index .Config.Labels "org.apes-infra.inputs"}}' "$1" 2>/dev/null)" == "$2" ]]
}

_remove_build_root() {
  # Unmount whatever debootstrap left mounted inside (proc, sys, dev/pts) before removing.
  local dir="$1" mnt
  [[ -d "$dir" ]] || return 0
  for mnt in $(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r); do
    as_root umount -l "$mnt"
  done
  as_root rm -rf --one-file-system "$dir" "$dir.log"
}

_build_image() {
  local major="$1" suite="$2" tag="apes-infra/debian:$1" want="$3" tarball tmp
  _image_current "$tag" "$want" && return 0
  tarball="$APES_CACHE/images/debian-$major-$want.tar"
  if [[ ! -f "$tarball" ]]; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (ensure_host_tools installs it)"
    log "building the Debian $major ($suite) base image with debootstrap"
    tmp="$(mktemp -d "$APES_CACHE/images/build-$suite.XXXX")"
    __apes_build_root="$tmp"
    trap '_remove_build_root "$__apes_build_root"' EXIT
    trap 'exit 143' TERM INT
    as_root debootstrap --variant=minbase --include="$APES_IMAGE_PACKAGES" "$suite" "$tmp" \
      "$APES_DEBIAN_MIRROR" >"$tmp.log" 2>&1 || { tail -n 30 "$tmp.log" >&2; die "debootstrap $suite failed"; }
    as_root env APES_APT_PROXY="http://$(docker_bridge_ip):$APES_APT_PROXY_PORT" \
      bash "$APES_ROOT/images/customize.sh" "$tmp" "$suite" "$APES_DEBIAN_MIRROR"
    as_root tar -C "$tmp" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    _remove_build_root "$tmp"
    trap - EXIT TERM INT
  fi
  log "importing $tag"
  docker import \
    -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
    -c "LABEL org.apes-infra.inputs=$want" "$tarball" "$tag" >/dev/null
  # Keep only the newest tarball per major version.
  find "$APES_CACHE/images" -maxdepth 1 -name "debian-$major-*.tar" ! -name "debian-$major-$want.tar" -delete
}

ensure_image() {
  # ensure_image <debian major> <suite>; one builder per image on this machine at a time.
  local want
  want="$(image_inputs_hash "$2")"
  _image_current "apes-infra/debian:$1" "$want" && return 0
  mkdir -p "$APES_CACHE/images"
  with_lock "image-$1" _build_image "$1" "$2" "$want"
}

# Runs named steps at once, each in its own process group with its output in a log file.
# When one fails, the others are stopped (no orphans), and the failed step's name and the tail of
# its log are printed. Interrupting the caller stops them all too.
#   run_parallel NAME 'COMMAND' [NAME 'COMMAND' ...]   (commands run with scripts/lib.sh loaded)
run_parallel() {
  local -A pids=() logs=()
  local name dir
  dir="$(mktemp -d "${TMPDIR:-/tmp}/apes-parallel.XXXX")"
  while [[ $# -gt 0 ]]; do
    name="$1"
    logs[$name]="$dir/$name.log"
    setsid bash -c "source '$APES_ROOT/scripts/lib.sh'; $2" >"${logs[$name]}" 2>&1 &
    pids[$name]=$!
    shift 2
  done
  _stop_parallel() {
    local p
    for p in "$@"; do kill -TERM -- "-$p" 2>/dev/null || true; done  # already gone is fine
    for p in "$@"; do wait "$p" 2>/dev/null || true; done            # reap; their status is moot
  }
  trap '_stop_parallel "${pids[@]}"; exit 130' INT TERM
  local done_pid rc failed=""
  while [[ ${#pids[@]} -gt 0 ]]; do
    rc=0
    wait -n -p done_pid "${pids[@]}" || rc=$?
    for name in "${!pids[@]}"; do
      [[ ${pids[$name]} == "$done_pid" ]] || continue
      unset "pids[$name]"
      if [[ $rc -ne 0 ]]; then
        failed="$name"
      else
        log "$name: done"
      fi
    done
    if [[ -n "$failed" ]]; then
      [[ ${#pids[@]} -gt 0 ]] && { log "stopping ${!pids[*]}"; _stop_parallel "${pids[@]}"; }
      trap - INT TERM
      printf 'ERROR: step %s failed (exit %s); last lines of %s:\n' "$failed" "$rc" "${logs[$failed]}" >&2
      tail -n 40 "${logs[$failed]}" >&2
      return 1
    fi
  done
  trap - INT TERM
  rm -rf "$dir"
}

ensure_images() {
  local want12 want13
  want12="$(image_inputs_hash bookworm)" want13="$(image_inputs_hash trixie)"
  if _image_current apes-infra/debian:12 "$want12" && _image_current apes-infra/debian:13 "$want13"; then
    return 0
  fi
  run_parallel debian-12-image 'ensure_image 12 bookworm' debian-13-image 'ensure_image 13 trixie'
}

# Every tool this machine needs outside the virtual environments, installed once and before any
# parallel step: python3-venv (virtual environments from Debian's python3), git, shellcheck
# (ansible-test), gnupg (the docker role's key check, community.crypto.gpg_fingerprint, and the
# docker scenario's throwaway keys), openssl (docker scenario), debootstrap (base images),
# apt-cacher-ng (package cache for the containers), Debian's docker.io when no Docker engine is
# installed, faketime (unit tests with the clock moved).
ensure_host_tools() {
  local pkgs=(python3-venv shellcheck git gnupg openssl debootstrap apt-cacher-ng faketime)
  command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
  apt_install "${pkgs[@]}"
}

# --- promtool (unit tests of the Prometheus rules) ---------------------------------------------
# Debian's promtool, out of the prometheus package without installing it (no daemon, no user):
# apt-get download checks the .deb against the signed archive's checksums, and only
# usr/bin/promtool is kept, in APES_CACHE/tools/promtool-<Debian version>/promtool.
# Exports APES_PROMTOOL, where tests/unit/roles/test_prometheus_rules.py finds it.
_promtool_version() {
  # Empty when apt knows no such package (or no apt at all): the caller says so.
  { apt-cache policy prometheus 2>/dev/null || true; } | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

_install_promtool() {  # _install_promtool VERSION DEST
  local version="$1" dest="$2" tmp
  [[ -x "$dest" ]] && return 0
  log "extracting promtool from Debian's prometheus $version"
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/apes-promtool.XXXX")"
  # apt-get download writes into the current directory, a private one that apt's sandbox user
  # (_apt) cannot enter: the download runs as the caller (root), as apt would fall back to anyway.
  if ! (cd "$tmp" && apt_get -o APT::Sandbox::User=root download -qq "prometheus=$version") \
    || ! dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool; then
    rm -rf "$tmp"
    die "could not extract promtool from Debian's prometheus $version"
  fi
  mkdir -p "${dest%/*}"
  mv "$tmp/usr/bin/promtool" "$dest.part.$$"
  mv "$dest.part.$$" "$dest"
  rm -rf "$tmp"
}

_ensure_promtool_locked() {
  local version
  version="$(_promtool_version)"
  if [[ -z "$version" ]]; then
    # No candidate yet: this machine's package lists were never fetched (fresh container).
    with_lock apt apt_get update -qq
    version="$(_promtool_version)"
  fi
  [[ -n "$version" ]] || die "Debian's archive has no prometheus package for this machine (apt-cache policy prometheus)"
  APES_PROMTOOL="$APES_CACHE/tools/promtool-$version/promtool"
  _install_promtool "$version" "$APES_PROMTOOL"
}

ensure_promtool() {
  local found
  # The newest one extracted before: no apt call on a warm machine.
  mkdir -p "$APES_CACHE/tools"
  found="$(find "$APES_CACHE/tools" -mindepth 2 -maxdepth 2 -path '*/promtool-*/promtool' -type f | sort -V | tail -n 1)"
  if [[ -z "$found" ]]; then
    with_lock promtool _ensure_promtool_locked
    found="$APES_PROMTOOL"
  fi
  export APES_PROMTOOL="$found"
}

# Debian's Chromium, for the default scenario's browser test (headless; the suite only).
ensure_browser() {
  command -v chromium >/dev/null 2>&1 || apt_install chromium
}

# The local environment: the newest lane only.
bootstrap_all() {
  ensure_host_tools
  ensure_venv
  ensure_docker
  ensure_apt_proxy
  ensure_images
}

# The test suite (and scripts/bootstrap): every lane.
bootstrap_lanes() {
  ensure_host_tools
  ensure_promtool
  ensure_browser
  ensure_lanes
  ensure_docker
  ensure_apt_proxy
  ensure_images
}
