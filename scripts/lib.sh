# shellcheck shell=bash
# Shared helpers for scripts/services and scripts/slapd-instance (sourced, not run).
# Callers set `set -euo pipefail` and PROG (their name, for messages).

# shellcheck disable=SC2034 # used by the scripts that source this
SERVICES_TIMEOUT="${CCASS_SERVICES_TIMEOUT:-30}" # seconds to wait for a server to become ready

info() { printf '%s: %s\n' "${PROG:-services}" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "${PROG:-services}" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "${PROG:-services}" "$*" >&2
  exit 1
}

# Print the last lines of a log file to stderr (used when a server fails to start).
log_tail() {
  local file=$1
  if [[ -r $file ]]; then
    printf -- '--- last lines of %s ---\n' "$file" >&2
    tail -n 25 "$file" >&2 || true
    printf -- '---\n' >&2
  fi
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

is_loopback() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

# True when something accepts TCP connections on HOST PORT.
tcp_open() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# True when PID is alive and its command name is COMM (guards against recycled pids).
pid_is() {
  local pid=$1 comm=$2
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]]
}

# Find an executable by name on PATH or in the usual sbin/libexec directories.
find_exe() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  for dir in /usr/sbin /sbin /usr/local/sbin /usr/local/bin /usr/local/libexec; do
    if [[ -x $dir/$name ]]; then
      printf '%s\n' "$dir/$name"
      return 0
    fi
  done
  return 1
}

# Command prefix that runs as root: empty when root, `sudo -n` when passwordless sudo works.
# Returns non-zero when neither is available.
root_cmd() {
  if ((EUID == 0)); then
    ROOT_CMD=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    ROOT_CMD=(sudo -n)
  else
    return 1
  fi
}

# Install Debian packages, or fail naming them when we cannot (not root, no passwordless sudo).
# Output goes to $APT_LOG. Never lets a package start its own daemon.
apt_install() {
  local pkgs=("$@") log="${APT_LOG:-/dev/stderr}" guard=""
  if ! root_cmd || ! command -v apt-get >/dev/null 2>&1; then
    die "missing packages: ${pkgs[*]}. Install them (as root): apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
  fi
  info "installing Debian packages: ${pkgs[*]} (log: $log)"
  # A policy-rc.d that refuses keeps packaged daemons (slapd on :389, the main PostgreSQL
  # cluster, nats-server) from being started by their postinst scripts.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# temporary, from ccass scripts/services\nexit 101\n' |
      "${ROOT_CMD[@]}" tee "$guard" >/dev/null
    "${ROOT_CMD[@]}" chmod 755 "$guard"
  fi
  if [[ " ${pkgs[*]} " == *" slapd "* ]] && command -v debconf-set-selections >/dev/null 2>&1; then
    # We run slapd from our own slapd.conf: skip the package's default database.
    echo 'slapd slapd/no_configuration boolean true' | "${ROOT_CMD[@]}" debconf-set-selections
  fi
  local rc=0
  if [[ -z ${CCASS_APT_UPDATED:-} ]]; then
    "${ROOT_CMD[@]}" apt-get update -q >>"$log" 2>&1 || rc=$?
    export CCASS_APT_UPDATED=1
  fi
  if ((rc == 0)); then
    "${ROOT_CMD[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1 || rc=$?
  fi
  if [[ -n $guard ]]; then "${ROOT_CMD[@]}" rm -f "$guard"; fi
  if ((rc != 0)); then
    log_tail "$log"
    die "could not install: ${pkgs[*]} (apt-get exit $rc)"
  fi
}
