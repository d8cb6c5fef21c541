#!/usr/bin/env bash
# debian12-root.sh DIR -- a clean Debian 12 (bookworm) root in DIR, as a fresh server has it
# (debootstrap's minimal base plus python3, which a standard Debian install includes; not
# python3-venv, which scripts/install.sh must install itself), and in DIR.debs the .deb files
# apt will want for that, so the test that installs needs no network. The deployment test
# runs scripts/install.sh in a throw-away overlay on top of DIR, so DIR itself stays clean.
#
# Made once and kept (like the sandbox's Asterisk root); debootstrap's .deb files are cached
# in $CACHE (default: DIR.cache). A lock (DIR.lock) makes concurrent runs from other
# checkouts wait for the first; an unfinished step (no DIR/.callkpi-root-done, no
# DIR.debs/.complete) is done again. Root only.
# Environment: MIRROR (default http://deb.debian.org/debian), CACHE.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
ROOT="$(realpath -m "$1")"
CACHE="$(realpath -m "${CACHE:-$ROOT.cache}")"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
DONE="$ROOT/.callkpi-root-done"
DEBS="$ROOT.debs"
LOG="$CACHE/debootstrap.log"

log() { printf '[debian12-root %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$ROOT" in /|/usr|/usr/*|/etc|/etc/*|/bin|/sbin|/lib*|/var|/home|/root) die "refusing DIR=$ROOT";; esac
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

make_root() {
  if [ -e "$ROOT" ]; then
    log "removing the unfinished root $ROOT"
    rm -rf --one-file-system "$ROOT"
  fi
  log "debootstrap --variant=minbase --include=python3 bookworm -> $ROOT (log: $LOG)"
  local t0=$SECONDS
  debootstrap --variant=minbase --include=python3 --cache-dir="$CACHE" bookworm "$ROOT" \
    "$MIRROR" >"$LOG" 2>&1 || { tail -20 "$LOG" >&2; die "debootstrap failed; its log: $LOG"; }
  rm -rf "$ROOT"/var/cache/apt/archives/*.deb
  touch "$DONE"
  log "made in $((SECONDS - t0)) s: $(du -sxh "$ROOT" | cut -f1)"
}

# What `apt-get install python3-venv` in the root will fetch, fetched now with the root's own
# package lists; the root is left as it was (no resolv.conf, no apt caches).
download_debs() {
  rm -rf "$DEBS"
  mkdir -p "$DEBS/partial"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  local ok=0
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin apt-get install -qq \
    --download-only --no-install-recommends python3-venv >"$LOG.debs" 2>&1 </dev/null && ok=1
  mv "$ROOT"/var/cache/apt/archives/*.deb "$DEBS/" 2>/dev/null || true
  rm -f "$ROOT/etc/resolv.conf" "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/lock
  [ $ok = 1 ] || { tail -20 "$LOG.debs" >&2; die "apt download failed; its log: $LOG.debs"; }
  touch "$DEBS/.complete"
  log "python3-venv and its dependencies in $DEBS: $(ls "$DEBS"/*.deb | wc -l) packages"
}

mkdir -p "$(dirname "$ROOT")" "$CACHE"
exec 9>"$ROOT.lock"
flock 9
[ -f "$DONE" ] || make_root
[ -f "$DEBS/.complete" ] || download_debs
