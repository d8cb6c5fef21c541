#!/usr/bin/env bash
# install.sh -- install (or upgrade) callkpi on the PBX, from this source tree, as root:
#
#     sudo scripts/install.sh
#
# On Debian 12 or newer (Ubuntu 24.04 works the same way). It makes:
#   /opt/callkpi                 a Python virtualenv with callkpi in it (Debian does not allow
#                                pip to install into the system Python), owned by root
#   /usr/local/bin/callkpi       a link to /opt/callkpi/bin/callkpi: the path the units run
#   user and group callkpi       a system account without login or home, in group asterisk
#                                when it exists (to read /var/log/asterisk/queue_log)
#   /etc/callkpi/callkpi.toml    the configuration (0640 root:callkpi), only if there is none
#   /etc/callkpi/listen.env      the AMI secret for callkpi-listen (0600 root:root), empty
#   /etc/callkpi/email.env       recipients and SMTP password for callkpi-email (0600), empty
#   /etc/callkpi/store.env       the PostgreSQL password every unit reads (0600), empty
#   /var/lib/callkpi             the database directory (0750 callkpi:callkpi)
#   /etc/systemd/system/callkpi-*.service, callkpi-email.timer      the units, not enabled
#   /usr/share/doc/callkpi       the documentation the units point to
# and installs python3-venv with apt if it is missing. Running it again upgrades callkpi and
# the units and keeps the configuration and the .env files as they are. docs/deploy.md says
# what to do next (and how to remove it all).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/callkpi
ETC=/etc/callkpi
STATE=/var/lib/callkpi
UNITS=/etc/systemd/system
DOCS=/usr/share/doc/callkpi
ACCOUNT=callkpi

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

python_ready() {
  python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

system_packages() {
  python_ready && return 0
  say "installing python3 and python3-venv with apt"
  # with the package lists as they are first; refreshed only if they are too old for that
  apt_install python3 python3-venv 2>/dev/null || { apt-get update -qq && apt_install python3 python3-venv; }
  python_ready || die "callkpi needs Python 3.11 or newer with venv; this system has $(python3 -V 2>&1)"
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

account() {
  getent group "$ACCOUNT" >/dev/null || groupadd --system "$ACCOUNT"
  if ! getent passwd "$ACCOUNT" >/dev/null; then
    useradd --system --gid "$ACCOUNT" --home-dir "$STATE" --no-create-home \
      --shell /usr/sbin/nologin --comment "callkpi call-center KPIs" "$ACCOUNT"
    say "created system user $ACCOUNT"
  fi
  if getent group asterisk >/dev/null; then
    usermod --append --groups asterisk "$ACCOUNT"
  else
    say "warning: no group asterisk: callkpi-tail reads /var/log/asterisk/queue_log as that" \
        "group (install Asterisk first, or change SupplementaryGroups= in its unit)"
  fi
}

virtualenv() {
  [ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
  say "installing callkpi from $SRC into $PREFIX"
  "$PREFIX/bin/pip" install --quiet --disable-pip-version-check --upgrade "$SRC"
  ln -sfn "$PREFIX/bin/callkpi" /usr/local/bin/callkpi
}

configuration() {
  install -d -m 0750 -o root -g "$ACCOUNT" "$ETC"
  if [ ! -e "$ETC/callkpi.toml" ]; then
    install -m 0640 -o root -g "$ACCOUNT" "$SRC/asterisk_conf/callkpi.toml" "$ETC/callkpi.toml"
    say "wrote $ETC/callkpi.toml: set [server] name, [report] timezone and [smtp] there"
  fi
  env_file listen.env "CALLKPI_AMI_SECRET=<the secret of [callkpi] in /etc/asterisk/manager.conf>"
  env_file email.env "CALLKPI_EMAIL_TO=manager@example.com team-leads@example.com" \
                     "CALLKPI_SMTP_PASSWORD=<the relay password, if [smtp] username is set>"
  env_file store.env "CALLKPI_STORE_PASSWORD=<the password, if [store] db is a postgresql:// URL>"
  install -d -m 0750 -o "$ACCOUNT" -g "$ACCOUNT" "$STATE"
}

# env_file NAME EXAMPLE...: an EnvironmentFile the unit reads as root; the examples commented
env_file() {
  local path="$ETC/$1"
  shift
  [ -e "$path" ] && return 0
  install -m 0600 -o root -g root /dev/null "$path"
  { echo "# read by systemd for the callkpi units; uncomment and fill in, e.g.:"
    printf '# %s\n' "$@"; } > "$path"
  say "wrote $path (empty: fill it in before enabling its unit)"
}

units() {
  install -m 0644 "$SRC"/asterisk_conf/systemd/callkpi-*.service \
    "$SRC"/asterisk_conf/systemd/callkpi-*.timer "$UNITS/"
  install -d -m 0755 "$DOCS"
  install -m 0644 "$SRC"/docs/*.md "$DOCS/"
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
}

[ "$(id -u)" = 0 ] || die "run it as root: sudo $0"
[ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/asterisk_conf/systemd" ] || die "$SRC is not a callkpi source tree"
system_packages
account
virtualenv
configuration
units
say "installed $(/usr/local/bin/callkpi --version)"
say "next: docs/deploy.md, \"Install callkpi\" (the secret, then systemctl enable --now ...)"
