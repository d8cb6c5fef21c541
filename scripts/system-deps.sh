#!/usr/bin/env bash
# System packages the test suite needs on a Debian machine: debootstrap (to build the sandbox
# Asterisk root), chromium (the report's browser tests), espeak-ng and sox (the Persian survey
# prompts the sandbox test generates) and postgresql (the server of the PostgreSQL store's
# tests: each run starts a throwaway cluster of its own, the package's own cluster is not
# used). Installs only what is missing.
set -euo pipefail
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v chromium >/dev/null || missing+=(chromium)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v sox >/dev/null || missing+=(sox)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: need root to install: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}" >&2
apt-get -o Acquire::Check-Valid-Until=false update -qq
# policy-rc.d: the package's own cluster is not started (nor left running) on a test machine
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
