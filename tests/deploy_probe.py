"""Install callkpi into a throw-away copy of a clean Debian 12 root, as an admin would, and
report what the install made (JSON on stdout). tests/test_deploy.py runs it inside a private
mount namespace (`unshare --mount`), so every mount made here dies with this process.

    python deploy_probe.py BASE_ROOT SCRATCH WHEELS DEBS SOURCE

BASE_ROOT is never written: the install runs in an overlay whose changes go to SCRATCH.
WHEELS is a directory of wheels pip installs from (no index), DEBS the .deb files apt
installs from (its archive cache, read-only), SOURCE the tree to install from.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SRC_IN_ROOT = "/usr/src/callkpi"
WHEELS_IN_ROOT = "/var/cache/callkpi-wheels"
SAMPLE = "examples/queue_log.sample"
SAMPLE_DAY = ["--from", "2026-11-24", "--to", "2026-11-24"]
QUEUE_LOG = "/var/log/asterisk/queue_log"
CONFIG = ["--config", "/etc/callkpi/callkpi.toml"]
PATHS = ["/etc/callkpi", "/etc/callkpi/callkpi.toml", "/etc/callkpi/listen.env",
         "/etc/callkpi/email.env", "/etc/callkpi/store.env", "/var/lib/callkpi",
         "/opt/callkpi", "/usr/local/bin/callkpi", "/usr/share/doc/callkpi"]


def main(base: Path, scratch: Path, wheels: Path, debs: Path, source: Path) -> None:
    root = mount_root(base, scratch, wheels, debs)
    copy_source(source, root / SRC_IN_ROOT.lstrip("/"))
    asterisk_was_here(root)
    facts: dict[str, Any] = {"install": in_root(root, f"{SRC_IN_ROOT}/scripts/install.sh")}
    facts.update(probe(root))
    config = root / "etc/callkpi/callkpi.toml"
    config.write_text(config.read_text() + "# the admin's own line\n")
    facts["reinstall"] = in_root(root, f"{SRC_IN_ROOT}/scripts/install.sh")
    facts["config_kept"] = config.read_text().endswith("# the admin's own line\n")
    print(json.dumps(facts))


def mount_root(base: Path, scratch: Path, wheels: Path, debs: Path) -> Path:
    upper, work, root = scratch / "upper", scratch / "work", scratch / "root"
    for directory in (upper, work, root):
        directory.mkdir()
    mount("-t", "overlay", "overlay", "-o",
          f"lowerdir={base},upperdir={upper},workdir={work}", str(root))
    mount("-t", "proc", "proc", str(root / "proc"))
    for inside, outside in ((WHEELS_IN_ROOT, wheels), ("/var/cache/apt/archives", debs)):
        target = root / inside.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        mount("--bind", str(outside), str(target))
        mount("-o", "remount,bind,ro", str(target))
    return root


def asterisk_was_here(root: Path) -> None:
    """What an Asterisk installed from source (Debian 12 has no package) leaves that callkpi
    relies on: the asterisk group, and a queue_log only that group may read."""
    in_root(root, "groupadd", "--system", "asterisk")
    in_root(root, "install", "-d", "-m", "0750", "-g", "asterisk", "/var/log/asterisk")
    in_root(root, "install", "-m", "0640", "-g", "asterisk", f"{SRC_IN_ROOT}/{SAMPLE}",
            QUEUE_LOG)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def copy_source(source: Path, target: Path) -> None:
    """What a fresh clone holds: the tracked files (and new ones not ignored), no .venv."""
    listed = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        path = source / name
        if path.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)


def in_root(root: Path, *command: str, user: str | None = None, cwd: str = "/"
            ) -> dict[str, Any]:
    """Run a command in the root as root (or as `user`, without a login: as a unit or sudo
    would), in `cwd`."""
    if user is not None:
        group = "nogroup" if user == "nobody" else user
        command = ("setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", *command)
    command = ("sh", "-c", 'cd "$0" && exec "$@"', cwd, *command)
    env = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG=C.UTF-8", f"PIP_FIND_LINKS={WHEELS_IN_ROOT}", "PIP_NO_INDEX=1",
           f"HOME={'/root' if user is None else '/nonexistent'}"]
    done = subprocess.run(["chroot", str(root), *env, *command], capture_output=True, text=True)
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr}


def probe(root: Path) -> dict[str, Any]:
    stat = in_root(root, "stat", "-c", "%n %a %U %G %F", *PATHS)["out"].splitlines()
    return {
        "passwd": in_root(root, "getent", "passwd", "callkpi")["out"].strip(),
        "groups": in_root(root, "id", "-nG", "callkpi")["out"].split(),
        "modes": {line.split()[0]: line.split(maxsplit=1)[1] for line in stat},
        "units": units(root),
        "version": in_root(root, "callkpi", "--version", user="callkpi"),
        "ingest": in_root(root, "callkpi", *CONFIG, "ingest", QUEUE_LOG, user="callkpi"),
        "report": in_root(root, "callkpi", *CONFIG, "report", *SAMPLE_DAY, user="callkpi"),
        # the page, its charts and its template: the package's data files were installed
        "html": in_root(root, "env", "MPLCONFIGDIR=/tmp", "callkpi", *CONFIG, "report",
                        *SAMPLE_DAY, "--format", "html", user="callkpi"),
        "db": in_root(root, "stat", "-c", "%U %G", "/var/lib/callkpi/callkpi.db")["out"].strip(),
        # an admin's `sudo -u callkpi callkpi db info` typed in root's home
        "info_from_root_home": in_root(root, "callkpi", "db", "info", user="callkpi",
                                       cwd="/root"),
        # anyone else: neither the configuration nor the database is theirs to read
        "stranger_report": in_root(root, "callkpi", "report", *SAMPLE_DAY, user="nobody"),
        "stranger_db": in_root(root, "callkpi", "--config", "/dev/null", "db", "info", "--db",
                               "/var/lib/callkpi/callkpi.db", user="nobody"),
    }


def units(root: Path) -> dict[str, dict[str, Any]]:
    """Each installed unit and the files it names: does each exist in the root, and can the
    unit's user run its ExecStart?"""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "etc/systemd/system").glob("callkpi-*")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.read(path)
        named = [d.removeprefix("file://") for d in unit["Unit"]["Documentation"].split()]
        facts: dict[str, Any] = {}
        if unit.has_section("Service"):
            service = unit["Service"]
            executable = service["ExecStart"].split()[0]
            named += [executable, *(f.lstrip("-") for f in service.get("EnvironmentFile",
                                                                      "").split())]
            facts["user"] = service["User"]
            facts["runs"] = in_root(root, "test", "-x", executable, user=service["User"])["rc"] == 0
        facts["exists"] = {name: in_root(root, "test", "-e", name)["rc"] == 0 for name in named}
        found[path.name] = facts
    return found


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:6]))
