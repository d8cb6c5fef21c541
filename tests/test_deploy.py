"""The admin's install path (docs/deploy.md, scripts/install.sh) on a clean Debian 12 root:
the script runs, makes the callkpi user, /etc/callkpi with the config and the .env files, the
units whose ExecStart exists and runs as their user, and callkpi works as that user.

The clean root (debootstrap, scripts/debian12-root.sh) is made once per machine and cached
in $CALLKPI_DEPLOY_CACHE (default /var/tmp/callkpi/deploy), with the .deb files apt will want
and the wheels pip installs from; each run installs into a throw-away overlay of it, in
network and mount namespaces of its own: the install itself goes to no server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).parent.parent
CACHE = Path(os.environ.get("CALLKPI_DEPLOY_CACHE", "/var/tmp/callkpi/deploy"))

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def debian12() -> Path:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("installing into a Debian root needs root, debootstrap and unshare(1)")
    root = CACHE / "bookworm"
    subprocess.run(["bash", str(REPO / "scripts" / "debian12-root.sh"), str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def wheels() -> Path:
    """callkpi's dependencies and its build backend as wheels, made once per set of
    requirements (pip in the root installs from here, offline)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = sorted([*project["project"]["dependencies"], *project["build-system"]["requires"],
                     "wheel"])
    key = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]
    directory = CACHE / f"wheels-{key}"
    with locked(CACHE / "wheels.lock"):
        if not (directory / ".complete").exists():
            shutil.rmtree(directory, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir",
                            str(directory), *wanted], check=True)
            (directory / ".complete").touch()
    return directory


@pytest.fixture(scope="module")
def installed(debian12: Path, wheels: Path) -> dict[str, Any]:
    """What installing (and installing again) made in a fresh copy of the root."""
    debs = debian12.with_name(debian12.name + ".debs")
    with tempfile.TemporaryDirectory(prefix="callkpi-deploy-") as scratch:  # ~300 MB
        probe = subprocess.run(
            ["unshare", "--mount", "--net", "--propagation", "private", sys.executable,
             str(Path(__file__).parent / "deploy_probe.py"), str(debian12), scratch,
             str(wheels), str(debs), str(REPO)],
            capture_output=True, text=True, timeout=540)
    assert probe.returncode == 0, probe.stderr
    facts: dict[str, Any] = json.loads(probe.stdout)
    return facts


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock: another checkout's test run on this machine waits for this one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def test_the_install_script_runs_and_runs_again(installed: dict[str, Any]) -> None:
    for run in ("install", "reinstall"):
        assert installed[run]["rc"] == 0, installed[run]["err"]
        assert "Traceback" not in installed[run]["err"]
    assert "installing python3 and python3-venv with apt" in installed["install"]["out"]
    assert "installing python3" not in installed["reinstall"]["out"]
    assert installed["config_kept"]  # an upgrade keeps the admin's configuration


def test_the_callkpi_system_user(installed: dict[str, Any]) -> None:
    name, _, uid, gid, _, home, shell = installed["passwd"].split(":")
    assert name == "callkpi" and int(uid) < 1000 and home == "/var/lib/callkpi"
    assert shell == "/usr/sbin/nologin"
    assert installed["groups"] == ["callkpi", "asterisk"]  # to read the queue_log


def test_configuration_and_directories(installed: dict[str, Any]) -> None:
    assert installed["modes"] == {
        "/etc/callkpi": "750 root callkpi directory",
        "/etc/callkpi/callkpi.toml": "640 root callkpi regular file",
        "/etc/callkpi/listen.env": "600 root root regular file",
        "/etc/callkpi/email.env": "600 root root regular file",
        "/etc/callkpi/store.env": "600 root root regular file",
        "/var/lib/callkpi": "750 callkpi callkpi directory",
        "/opt/callkpi": "755 root root directory",
        "/usr/local/bin/callkpi": "777 root root symbolic link",
        "/usr/share/doc/callkpi": "755 root root directory",
    }


def test_every_unit_names_files_that_exist_and_runs_as_callkpi(installed: dict[str, Any]
                                                                ) -> None:
    units = installed["units"]
    assert sorted(units) == ["callkpi-agi.service", "callkpi-email.service",
                             "callkpi-email.timer", "callkpi-listen.service",
                             "callkpi-tail.service"]
    for name, unit in units.items():
        assert all(unit["exists"].values()), (name, unit["exists"])
        if name.endswith(".service"):
            assert unit["user"] == "callkpi" and unit["runs"], name


def test_callkpi_runs_as_its_user(installed: dict[str, Any]) -> None:
    version = installed["version"]
    assert version["rc"] == 0, version["err"]
    assert version["out"].startswith("callkpi, version ")
    ingest, report = installed["ingest"], installed["report"]
    assert ingest["rc"] == 0, ingest["err"]
    assert ingest["out"].startswith("lines read 95, events stored 95")  # Asterisk's 0640 log
    assert report["rc"] == 0, report["err"]
    assert json.loads(report["out"])["totals"]["offered"] > 0
    html = installed["html"]
    assert html["rc"] == 0, html["err"]
    assert html["out"].lstrip().lower().startswith("<!doctype html")
    assert "data:image/png;base64," in html["out"]  # matplotlib drew the charts
    assert installed["db"] == "callkpi callkpi"  # made by the service user, in its directory


def test_the_data_is_the_callkpi_users_alone(installed: dict[str, Any]) -> None:
    info = installed["info_from_root_home"]
    assert info["rc"] == 0, info["err"]  # ./callkpi.toml cannot be looked for there: skipped
    assert "database: /var/lib/callkpi/callkpi.db" in info["out"]
    assert installed["stranger_report"] == {"rc": 1, "out": "", "err": (
        "Error: cannot read config file /etc/callkpi/callkpi.toml: permission denied (run "
        "callkpi as a user who may, or give --config)\n")}
    assert installed["stranger_db"] == {"rc": 1, "out": "", "err": (
        "Error: cannot open database /var/lib/callkpi/callkpi.db: Permission denied\n")}
