#!/usr/bin/env bash
# asterisk-sandbox.sh -- run a REAL Asterisk (Debian sid package) in a chroot on a
# Debian 12 host, for callkpi's tests and simulator.  Host network is shared: AMI on
# $AMI_BIND:$AMI_PORT, FastAGI requests go to agi://$AGI_HOST:$AGI_PORT on the host.
# The configuration is the product's asterisk_conf/ PLUS the test layer (test_layer/): a
# test-layer file with the name of a product file is installed as test-<name> and
# #include'd at the end of the product file (it adds to it, e.g. `[general](+)`); other
# test-layer files are installed as they are.  The product files are installed verbatim
# except for the FastAGI address agi://127.0.0.1:4573/, pointed at $AGI_HOST:$AGI_PORT.
#
#   asterisk-sandbox.sh install [CACHE_DIR]  debootstrap sid + apt install asterisk (idempotent)
#   asterisk-sandbox.sh start                render configs, start asterisk, wait for AMI
#                                            (no-op if already running with the same settings);
#                                            a clean PBX: the astdb (queue members...) is emptied
#   asterisk-sandbox.sh restart              stop + start keeping the astdb, like a real restart
#   asterisk-sandbox.sh restart-now          `core restart now`: Asterisk hangs every call up and
#                                            re-executes itself (same pid, astdb kept); returns
#                                            once the new one is fully booted and AMI answers
#   asterisk-sandbox.sh crash [DOWN_S]       kill -9 (no shutdown at all), start again DOWN_S later
#                                            keeping the astdb, as systemd would after a crash
#   asterisk-sandbox.sh stop                 stop the asterisk THIS script started (by PID)
#   asterisk-sandbox.sh restart | reload | status | rx 'CLI command' | reset-logs | paths
#   asterisk-sandbox.sh uninstall            stop, unmount, delete the chroot (keeps the cache)
#
# Environment (defaults):
#   ASTROOT=/var/tmp/callkpi/astroot     chroot directory (must not be /); outside the clone,
#   ASTCACHE=/var/tmp/callkpi/astcache   .deb cache         so a rerun on this machine is warm
#   ASTSTATE=/var/tmp/callkpi/run        pid file, settings of the running instance, console log
#   ASTCONF=<this dir>/../asterisk_conf  the product configuration
#   ASTTEST=<this dir>/test_layer        the test layer (@VAR@ placeholders filled in)
#   AMI_PORT=5038 AMI_BIND=127.0.0.1 AGI_HOST=127.0.0.1 AGI_PORT=4573
#   TEST_SECRET, LISTENER_SECRET         AMI secrets of the test user and of the product's
#                                        [callkpi] account (loopback-only test values)
#   SUITE=sid MIRROR=http://deb.debian.org/debian
#   AST_PACKAGES="asterisk asterisk-moh-opsound-gsm"
#   START_TIMEOUT=30
#   LOCK_WAIT=1800                       seconds to wait for a root (or cache) another run holds
#   ASTLOCK_FD                           a descriptor of $ASTROOT.lock the caller already holds
#                                        (simulator/sandbox.py holds it for a whole test session)
#
# One root serves one run at a time: every command that changes it holds $ASTROOT.lock (a
# flock, with the holder's pid in the file) while it runs, and install also holds
# $ASTCACHE/lock, since several roots may share one cache. A second run waits, saying for whom,
# instead of breaking the first (a half-made root, a stopped Asterisk, apt's own lock taken).
# A failure names the log that says why.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ASTROOT="${ASTROOT:-/var/tmp/callkpi/astroot}"
ASTCACHE="${ASTCACHE:-/var/tmp/callkpi/astcache}"
ASTCONF="${ASTCONF:-$HERE/../asterisk_conf}"
ASTTEST="${ASTTEST:-$HERE/test_layer}"
ASTSTATE="${ASTSTATE:-/var/tmp/callkpi/run}"
AMI_PORT="${AMI_PORT:-5038}"
AMI_BIND="${AMI_BIND:-127.0.0.1}"
AGI_HOST="${AGI_HOST:-127.0.0.1}"
AGI_PORT="${AGI_PORT:-4573}"
SUITE="${SUITE:-sid}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
AST_PACKAGES="${AST_PACKAGES:-asterisk asterisk-moh-opsound-gsm}"
START_TIMEOUT="${START_TIMEOUT:-30}"
LOCK_WAIT="${LOCK_WAIT:-1800}"
TEST_SECRET="${TEST_SECRET:-callkpi-test-secret}"
LISTENER_SECRET="${LISTENER_SECRET:-callkpi-listener-secret}"
PIDFILE="$ASTSTATE/asterisk.pid"
SETTINGS_FILE="$ASTSTATE/settings"
CONSOLE_LOG="$ASTSTATE/asterisk-console.log"
MARKER="$ASTROOT/.astsandbox-installed"

log() { printf '[asterisk-sandbox %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# hold_lock FD FILE WHAT: flock FILE on FD for this process's life, waiting up to LOCK_WAIT;
# the holder's pid goes into FILE, for the next one to name
hold_lock() {
  local fd=$1 file=$2 what=$3
  eval "exec $fd>>\"\$file\""
  if ! flock -n "$fd"; then
    log "waiting for $what, in use by pid $(cat "$file" 2>/dev/null) (lock $file)"
    flock -w "$LOCK_WAIT" "$fd" ||
      die "$what is still in use by pid $(cat "$file" 2>/dev/null) after ${LOCK_WAIT}s (lock $file)"
  fi
  echo $$ > "$file"
}

lock_root() {  # the root is this run's until it exits (or the caller's, with ASTLOCK_FD)
  if [ -n "${ASTLOCK_FD:-}" ]; then
    flock -n "$ASTLOCK_FD" || die "ASTLOCK_FD=$ASTLOCK_FD does not hold $ASTROOT.lock"
    return 0
  fi
  mkdir -p "$(dirname "$ASTROOT")"
  hold_lock 8 "$ASTROOT.lock" "the sandbox root $ASTROOT"
}

sanity() {
  ASTROOT="$(realpath -m "$ASTROOT")"
  MARKER="$ASTROOT/.astsandbox-installed"
  case "$ASTROOT" in /|/usr|/usr/*|/etc|/etc/*|/bin|/sbin|/lib*|/var|/home|/root|"") die "refusing ASTROOT=$ASTROOT";; esac
  [ "$(id -u)" = 0 ] || die "must run as root (chroot/debootstrap)"
}

is_mounted() { mountpoint -q "$1" 2>/dev/null; }
umount_if() { if is_mounted "$1"; then umount "$1" || umount -l "$1"; fi; }
mount_proc() { mkdir -p "$ASTROOT/proc"; is_mounted "$ASTROOT/proc" || mount -t proc proc "$ASTROOT/proc"; }

in_root() { chroot "$ASTROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# ------------------------------------------------------------------ install
cmd_install() {
  local t0=$SECONDS
  [ $# -ge 1 ] && ASTCACHE="$1"
  ASTCACHE="$(realpath -m "$ASTCACHE")"
  mkdir -p "$ASTCACHE/debootstrap" "$ASTCACHE/apt/partial" "$ASTSTATE"
  if [ -f "$MARKER" ] && [ -x "$ASTROOT/usr/sbin/asterisk" ]; then
    log "already installed: $(cat "$MARKER")"; return 0
  fi
  hold_lock 7 "$ASTCACHE/lock" "the package cache $ASTCACHE"  # debootstrap's and apt's
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap on the host"
    apt-get -o Acquire::Check-Valid-Until=false update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  if [ ! -f "$ASTROOT/.debootstrap-done" ]; then
    if [ -e "$ASTROOT" ]; then
      log "removing incomplete root $ASTROOT"
      umount_if "$ASTROOT/var/cache/apt/archives"; umount_if "$ASTROOT/proc"
      rm -rf --one-file-system "$ASTROOT"
    fi
    log "debootstrap --variant=minbase $SUITE -> $ASTROOT (cache $ASTCACHE/debootstrap)"
    local t1=$SECONDS
    debootstrap --variant=minbase --cache-dir="$ASTCACHE/debootstrap" "$SUITE" "$ASTROOT" "$MIRROR" \
      > "$ASTSTATE/debootstrap.log" 2>&1 ||
      { tail -20 "$ASTSTATE/debootstrap.log" >&2; die "debootstrap failed; its log: $ASTSTATE/debootstrap.log"; }
    touch "$ASTROOT/.debootstrap-done"
    log "debootstrap done in $((SECONDS - t1))s"
  fi
  # keep services from starting inside the chroot during apt
  printf '#!/bin/sh\nexit 101\n' > "$ASTROOT/usr/sbin/policy-rc.d"; chmod +x "$ASTROOT/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$ASTROOT/etc/resolv.conf" 2>/dev/null || true
  mount_proc
  mkdir -p "$ASTROOT/var/cache/apt/archives"
  is_mounted "$ASTROOT/var/cache/apt/archives" || mount --bind "$ASTCACHE/apt" "$ASTROOT/var/cache/apt/archives"
  # shellcheck disable=SC2064
  trap "umount_if '$ASTROOT/var/cache/apt/archives'; umount_if '$ASTROOT/proc'" EXIT
  local t2=$SECONDS ok=0
  # Check-Valid-Until=false: the registry here may serve a frozen sid snapshot
  # whose Release file is past its Valid-Until date ("Release file ... is expired").
  local aptopts=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3 -o Dpkg::Use-Pty=0)
  for try in 1 2 3; do
    if { in_root apt-get "${aptopts[@]}" update &&
         in_root env DEBIAN_FRONTEND=noninteractive apt-get "${aptopts[@]}" install -y -q \
           --no-install-recommends $AST_PACKAGES; } > "$ASTSTATE/apt-install.log" 2>&1; then
      ok=1; break
    fi
    tail -5 "$ASTSTATE/apt-install.log" >&2
    log "apt attempt $try failed; retrying"; sleep $((try * 5))
  done
  [ $ok = 1 ] || { tail -20 "$ASTSTATE/apt-install.log" >&2; die "apt-get install failed; its log: $ASTSTATE/apt-install.log"; }
  umount_if "$ASTROOT/var/cache/apt/archives"; umount_if "$ASTROOT/proc"; trap - EXIT
  rm -f "$ASTROOT"/var/cache/apt/*.bin   # apt's binary caches (~140 MB), rebuilt on demand
  log "apt install done in $((SECONDS - t2))s"
  local ver; ver="$(in_root /usr/sbin/asterisk -V)"
  echo "$ver suite=$SUITE installed=$(date -u +%FT%TZ)" > "$MARKER"
  log "installed $ver in $((SECONDS - t0))s; root size $(du -sxh "$ASTROOT" | cut -f1)"
}

# ------------------------------------------------------------------ helpers
ast_pid() {  # prints the PID of the asterisk we started, if it is alive and ours
  [ -f "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  # must be an asterisk process whose root is our chroot (never touch anyone else's)
  [ "$(readlink "/proc/$pid/root")" = "$ASTROOT" ] || return 1
  grep -q asterisk "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

ami_banner() {  # succeed if something answers with the AMI banner
  local line=""
  line="$(timeout 3 bash -c "exec 3<>/dev/tcp/$AMI_BIND/$AMI_PORT && IFS= read -r -t 2 l <&3 && printf '%s' \"\$l\"" 2>/dev/null)" || true
  [[ "$line" == "Asterisk Call Manager/"* ]]
}

port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

listener_is() {  # listener_is PID PORT: does PID own the LISTEN socket on PORT?
  local pid=$1 port hex inode
  port=$2; hex=$(printf '%04X' "$port")
  for inode in $(awk -v h=":$hex" '$2 ~ h"$" && $4 == "0A" {print $10}' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "socket:\[$inode\]" && return 0
  done
  return 1
}

fill_placeholders() {  # test-layer template -> stdout
  sed -e "s|@AMI_PORT@|$AMI_PORT|g" -e "s|@AMI_BIND@|$AMI_BIND|g" \
      -e "s|@AGI_HOST@|$AGI_HOST|g" -e "s|@AGI_PORT@|$AGI_PORT|g" \
      -e "s|@TEST_SECRET@|$TEST_SECRET|g" -e "s|@LISTENER_SECRET@|$LISTENER_SECRET|g" "$1"
}

render_configs() {
  local dst="$ASTROOT/etc/asterisk" f name
  [ -d "$ASTCONF" ] || die "no product config dir $ASTCONF"
  [ -d "$ASTTEST" ] || die "no test layer dir $ASTTEST"
  mkdir -p "$dst"
  for f in "$ASTCONF"/*.conf; do
    sed -e "s|agi://127\.0\.0\.1:4573/|agi://$AGI_HOST:$AGI_PORT/|g" "$f" > "$dst/$(basename "$f")"
  done
  # the survey must reach the test's FastAGI server, not a stray one on the default port
  grep -q "agi://$AGI_HOST:$AGI_PORT/" "$dst/extensions.conf" ||
    die "asterisk_conf/extensions.conf has no AGI(agi://127.0.0.1:4573/...) to point at $AGI_HOST:$AGI_PORT"
  for f in "$ASTTEST"/*.conf; do
    name="$(basename "$f")"
    if [ -f "$ASTCONF/$name" ]; then
      fill_placeholders "$f" > "$dst/test-$name"
      printf '\n; added by asterisk-sandbox.sh: the test layer\n#include "test-%s"\n' "$name" >> "$dst/$name"
    else
      fill_placeholders "$f" > "$dst/$name"
    fi
  done
  # users.conf is deprecated in 22 and only produces a warning
  rm -f "$dst/users.conf"
}

settings() { echo "AMI=$AMI_BIND:$AMI_PORT AGI=$AGI_HOST:$AGI_PORT CONF=$(realpath -m "$ASTCONF") TEST=$(realpath -m "$ASTTEST")"; }

# ------------------------------------------------------------------ start/stop
cmd_start() {  # cmd_start [keep-db]
  [ -f "$MARKER" ] || die "not installed ($ASTROOT); run: $0 install"
  mkdir -p "$ASTSTATE"
  local pid
  if pid="$(ast_pid)"; then
    [ "$(cat "$SETTINGS_FILE" 2>/dev/null)" = "$(settings)" ] ||
      die "already running (pid $pid) with other settings: $(cat "$SETTINGS_FILE" 2>/dev/null); stop it first"
    log "already running (pid $pid)"; return 0
  fi
  if port_busy "$AMI_BIND" "$AMI_PORT"; then
    die "$AMI_BIND:$AMI_PORT is already in use by another process; set AMI_PORT=<free port>"
  fi
  render_configs
  # every run starts from a clean PBX: persistent queue members and other astdb entries of an
  # earlier run would otherwise come back (the test layer cannot override persistentmembers)
  [ "${1:-}" = keep-db ] || rm -f "$ASTROOT/var/lib/asterisk/astdb.sqlite3"
  mkdir -p "$ASTROOT/run/asterisk" "$ASTROOT/var/spool/asterisk" "$ASTROOT/var/lib/asterisk"
  rm -f "$ASTROOT/run/asterisk/asterisk.ctl" "$ASTROOT/run/asterisk/asterisk.pid"
  mount_proc
  # -f: no fork (so $! is asterisk itself: chroot execs it), -n: no colours.
  # Do NOT pass -U/-G: with -U asterisk drops all capabilities except
  # CAP_NET_ADMIN and root can then no longer write the asterisk-owned dirs.
  # (without the lock descriptors: a running Asterisk must not keep the root locked)
  ( exec 7>&- 8>&-; [ -z "${ASTLOCK_FD:-}" ] || eval "exec $ASTLOCK_FD>&-"
    exec setsid chroot "$ASTROOT" /usr/sbin/asterisk -f -n </dev/null >"$CONSOLE_LOG" 2>&1 ) &
  pid=$!
  echo "$pid" > "$PIDFILE"
  settings > "$SETTINGS_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ami_banner; do
    if ! [ -d "/proc/$pid" ]; then tail -20 "$CONSOLE_LOG" >&2; rm -f "$PIDFILE"; die "asterisk exited during start; its console log: $CONSOLE_LOG"; fi
    [ $SECONDS -lt $deadline ] || { tail -20 "$CONSOLE_LOG" >&2; die "AMI did not answer within ${START_TIMEOUT}s; Asterisk's console log: $CONSOLE_LOG"; }
    sleep 0.2
  done
  in_root /usr/sbin/asterisk -rx 'core waitfullybooted' >/dev/null 2>&1 || true
  listener_is "$pid" "$AMI_PORT" || die "AMI port $AMI_PORT answers but is not owned by our asterisk (pid $pid); see $ASTROOT/var/log/asterisk/messages.log"
  log "asterisk running: pid $pid, AMI $AMI_BIND:$AMI_PORT, FastAGI target $AGI_HOST:$AGI_PORT"
}

cmd_stop() {
  local pid
  if ! pid="$(ast_pid)"; then
    log "not running (no live pid in $PIDFILE)"; rm -f "$PIDFILE"
  else
    in_root /usr/sbin/asterisk -rx 'core stop now' >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    if [ -d "/proc/$pid" ]; then log "still alive, SIGTERM $pid"; kill -TERM "$pid" 2>/dev/null || true; sleep 2; fi
    if [ -d "/proc/$pid" ]; then log "still alive, SIGKILL $pid"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
    rm -f "$PIDFILE" "$SETTINGS_FILE"
    log "stopped pid $pid"
  fi
  # unmount /proc only if no process is still using the chroot
  local busy=0 p
  for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$ASTROOT" ] && { busy=1; break; }; done
  [ $busy = 0 ] && umount_if "$ASTROOT/proc"
  return 0
}

cmd_restart_now() {
  local t0=$SECONDS up deadline=$((SECONDS + START_TIMEOUT + 20))
  ast_pid >/dev/null || die "not running"
  in_root /usr/sbin/asterisk -rx 'core restart now' >/dev/null 2>&1 || true
  # the old Asterisk answers while it hangs the calls up (up to 15 s): wait for the new one
  until up="$(in_root /usr/sbin/asterisk -rx 'core show uptime seconds' 2>/dev/null |
              awk '/System uptime/ {print $3}')" && [ -n "$up" ] && [ "$up" -le $((SECONDS - t0 + 1)) ]; do
    [ $SECONDS -lt $deadline ] || { tail -20 "$CONSOLE_LOG" >&2; die "Asterisk did not come back from 'core restart now'"; }
    sleep 0.2
  done
  in_root /usr/sbin/asterisk -rx 'core waitfullybooted' >/dev/null 2>&1 || true
  until ami_banner; do
    [ $SECONDS -lt $deadline ] || die "AMI did not answer after 'core restart now'"
    sleep 0.2
  done
  log "restarted (core restart now) in $((SECONDS - t0))s"
}

cmd_crash() {
  local pid
  pid="$(ast_pid)" || die "not running"
  kill -KILL "$pid"
  for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.05; done
  [ -d "/proc/$pid" ] && die "pid $pid survived kill -9"
  log "killed pid $pid (kill -9)"
  sleep "${1:-0}"
  cmd_start keep-db
}

cmd_status() {
  local pid
  if pid="$(ast_pid)"; then
    echo "running: pid $pid"
    in_root /usr/sbin/asterisk -rx 'core show version' || true
    in_root /usr/sbin/asterisk -rx 'core show uptime' || true
    if ami_banner; then echo "AMI: answering on $AMI_BIND:$AMI_PORT"; else echo "AMI: NOT answering on $AMI_BIND:$AMI_PORT"; fi
    in_root /usr/sbin/asterisk -rx 'core show channels count' || true
    in_root /usr/sbin/asterisk -rx 'queue show' || true
    return 0
  fi
  if [ -f "$MARKER" ]; then echo "stopped (installed: $(cat "$MARKER"))"; else echo "not installed"; fi
  return 3
}

cmd_rx() { ast_pid >/dev/null || die "not running"; in_root /usr/sbin/asterisk -rx "$*"; }

cmd_reset_logs() {
  local d="$ASTROOT/var/log/asterisk"
  : > "$d/queue_log" 2>/dev/null || true
  : > "$d/messages.log" 2>/dev/null || true
  : > "$d/full.log" 2>/dev/null || true
  if ast_pid >/dev/null; then in_root /usr/sbin/asterisk -rx 'logger reload' >/dev/null; fi
  log "logs truncated"
}

cmd_paths() {
  cat <<EOF
ASTROOT=$ASTROOT
QUEUE_LOG=$ASTROOT/var/log/asterisk/queue_log
MESSAGES_LOG=$ASTROOT/var/log/asterisk/messages.log
CONF_DIR=$ASTROOT/etc/asterisk
PIDFILE=$PIDFILE
CONSOLE_LOG=$CONSOLE_LOG
AMI=$AMI_BIND:$AMI_PORT
AGI=$AGI_HOST:$AGI_PORT
EOF
}

cmd_uninstall() {
  cmd_stop
  umount_if "$ASTROOT/var/cache/apt/archives"; umount_if "$ASTROOT/proc"
  if findmnt -rn -o TARGET | grep -q "^$ASTROOT/"; then die "something is still mounted under $ASTROOT"; fi
  rm -rf --one-file-system "$ASTROOT"
  log "removed $ASTROOT (cache $ASTCACHE kept)"
}

main() {
  local cmd="${1:-}"; shift || true
  sanity
  case "$cmd" in install|start|stop|restart|reload|reset-logs|uninstall) lock_root;; esac
  case "$cmd" in
    install) cmd_install "$@";;
    start) cmd_start;;
    stop) cmd_stop;;
    restart) cmd_stop; cmd_start keep-db;;
    restart-now) cmd_restart_now;;
    crash) cmd_crash "$@";;
    reload) ast_pid >/dev/null || die "not running"; render_configs; in_root /usr/sbin/asterisk -rx 'core reload';;
    status) cmd_status;;
    rx) cmd_rx "$@";;
    reset-logs) cmd_reset_logs;;
    paths) cmd_paths;;
    uninstall) cmd_uninstall;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] && exit 0 || exit 2;;
  esac
}
main "$@"
