"""An admin's mistakes, each made with the real `callkpi` command: one clear `Error:` line on
stderr and a non-zero exit, never a traceback, and nothing created that was not asked for."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callkpi.store import StoreError
from store_helpers import fetch_now, no_store_error

CALLKPI = str(Path(sys.executable).parent / "callkpi")
SAMPLE = Path(__file__).parent.parent / "examples" / "queue_log.sample"
DAY = ["--from", "2026-11-24", "--to", "2026-11-24"]  # the sample's day


def callkpi(*args: str, env: dict[str, str] | None = None, read_only: Path | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command in `cwd` (with `read_only` mounted read-only for it alone: a private
    mount namespace, so nothing else on the machine sees the mount)."""
    command = [CALLKPI, *args]
    if read_only is not None:
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && cd "$PWD"'
                   ' && shift && exec "$@"', "sh", str(read_only), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, "CALLKPI_CONFIG": os.devnull, **(env or {})})


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0].removeprefix("Error: ")


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """A value click refuses while reading the command line: its usage hint, then the line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("Usage: ")
    return result.stderr.splitlines()[-1].removeprefix("Error: ")


@pytest.fixture
def store(store_url: str) -> str:
    """The URL of a store holding the sample's day."""
    result = callkpi("ingest", "--db", store_url, str(SAMPLE))
    assert result.returncode == 0, result.stderr
    return store_url


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only mount needs root and unshare(1)")


# ------------------------------------------------------------------ report --output
def test_report_into_a_missing_directory(store: str, tmp_path: Path) -> None:
    out = tmp_path / "no" / "report.html"
    result = callkpi("report", *DAY, "--db", store, "--format", "html", "-o", str(out))
    assert one_error_line(result) == (
        f"cannot write {out}: directory {out.parent} does not exist")
    assert not out.parent.exists()


def test_report_into_a_read_only_directory(store: str, tmp_path: Path, needs_root: None
                                           ) -> None:
    out = tmp_path / "reports" / "report.json"
    out.parent.mkdir()
    result = callkpi("report", *DAY, "--db", store, "-o", str(out), read_only=out.parent)
    assert one_error_line(result) == f"cannot write {out}: directory {out.parent} is not writable"
    assert list(out.parent.iterdir()) == []


def test_report_output_replaces_the_file_whole(store: str, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "report.json"
    out.parent.mkdir()
    out.write_text("yesterday's report")
    result = callkpi("report", *DAY, "--db", store, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().startswith("{") and [p.name for p in out.parent.iterdir()] == [
        "report.json"]  # no temporary file left beside it


# ------------------------------------------------------------------------------ --db
def test_db_in_a_missing_directory_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "typo" / "callkpi.db"
    result = callkpi("ingest", "--db", str(db), str(SAMPLE))
    assert one_error_line(result) == (
        f"cannot create database {db}: directory {db.parent} does not exist")
    assert not db.parent.exists()


@pytest.mark.backends("sqlite")  # the mistakes of a store file's directory
def test_db_in_a_read_only_directory(store: str, tmp_path: Path, needs_root: None) -> None:
    new = tmp_path / "new" / "callkpi.db"
    new.parent.mkdir()
    result = callkpi("ingest", "--db", str(new), str(SAMPLE), read_only=new.parent)
    assert one_error_line(result) == (
        f"cannot create database {new}: {new.parent} is on a read-only file system")
    db = Path(store.removeprefix("sqlite://"))
    result = callkpi("db", "info", "--db", str(db), read_only=db.parent)
    assert one_error_line(result) == (
        f"cannot open database {db}: {db.parent} is on a read-only file system")


def test_db_that_is_a_directory(tmp_path: Path) -> None:
    result = callkpi("ingest", str(SAMPLE), env={"CALLKPI_DB": str(tmp_path)})
    assert one_error_line(result) == (
        f"cannot open database {tmp_path}: it is a directory (name a file in it)")


@pytest.mark.parametrize("command", [
    ["report", *DAY], ["email", "--yesterday", "--recipient", "a@example.com"], ["facts"],
    ["agents", "list"], ["agents", "leave", "Agent 1", "--on", "2026-11-24"], ["db", "info"],
])
def test_a_read_of_a_missing_database_says_so_and_creates_nothing(make_store_url,
                                                                  command: list[str]) -> None:
    typo = make_store_url(empty=True)  # a PostgreSQL database without a store in it
    result = callkpi(*command, "--db", typo)
    assert "Error: " + one_error_line(result) == no_store_error(typo)
    with pytest.raises(StoreError):  # still nothing there
        fetch_now(typo, "SELECT 1")


# ---------------------------------------------------------------------------- config
def test_config_that_is_a_binary_file(tmp_path: Path) -> None:
    binary = tmp_path / "callkpi.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00")
    result = callkpi("--config", str(binary), "db", "info")
    assert one_error_line(result) == f"{binary}: not a TOML config (not UTF-8 text)"


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    result = callkpi("db", "info", env={"CALLKPI_CONFIG": str(tmp_path)})
    assert usage_error(result) == f"Invalid value for '--config': File '{tmp_path}' is a directory."


@pytest.mark.parametrize("setting, message", [
    ("[kpi]\nservice_level_s = -5", "[kpi] service_level_s: must be at least 0, got -5"),
    ("[kpi]\ncsat_scale = 0", "[kpi] csat_scale: must be between 4 and 9, got 0"),
    ("[kpi]\nrepeat_window_h = nan", "[kpi] repeat_window_h: must be a finite number, got nan"),
    ("[kpi]\nwrapup_s = {support = -1}", "[kpi] wrapup_s.support: must be at least 0, got -1"),
    ("[survey]\nsample_rate = 2", "[survey] sample_rate: must be between 0 and 1, got 2"),
    ("[agi]\nport = 99999", "[agi] port: must be between 1 and 65535, got 99999"),
    ("[ami]\npoll = 1", "unknown key 'poll' in [ami]"),
])
def test_settings_out_of_range_are_refused_when_the_config_loads(
        tmp_path: Path, setting: str, message: str) -> None:
    config = tmp_path / "callkpi.toml"
    config.write_text(setting + "\n")
    result = callkpi("--config", str(config), "db", "info", "--db", str(tmp_path / "x.db"))
    assert one_error_line(result) == f"{config}: {message}"


def test_a_setting_out_of_range_from_the_environment() -> None:
    result = callkpi("db", "info", env={"CALLKPI_KPI_SERVICE_LEVEL_S": "-5"})
    assert one_error_line(result) == "CALLKPI_KPI_SERVICE_LEVEL_S: must be at least 0, got -5"


@pytest.mark.parametrize("section, key", [("ami", "secret"), ("smtp", "password")])
def test_a_secret_written_as_a_number_is_not_shown(tmp_path: Path, section: str, key: str
                                                   ) -> None:
    config = tmp_path / "callkpi.toml"
    config.write_text(f"[{section}]\n{key} = 271828182845\n")
    result = callkpi("--config", str(config), "db", "info")
    error = one_error_line(result)
    assert error == (f"{config}: [{section}] {key}: expected str, got an integer (a secret's "
                     "value is not shown: write it in quotes)")
    assert "271828" not in result.stderr + result.stdout


# ---------------------------------------------------------------------------- ports
@pytest.mark.parametrize("command", [["agi", "--port", "99999"],
                                     ["listen", "--ami-port", "0"],
                                     ["sandbox", "status", "--ami-port", "65536"]])
def test_a_port_out_of_range(command: list[str]) -> None:
    result = callkpi(*command, env={"CALLKPI_AMI_SECRET": "x"})
    assert usage_error(result).endswith("is not in the range 1<=x<=65535.")


# ---------------------------------------------------------------------------- report
def test_a_report_for_a_queue_that_never_existed(store: str) -> None:
    result = callkpi("report", *DAY, "--db", store, "--queue", "suport")
    assert one_error_line(result) == (
        "queue 'suport' never appeared in the store (queues: sales, support)")
    known = callkpi("report", "--from", "2020-01-01", "--to", "2020-01-01", "--db", store,
                    "--queue", "support")
    assert known.returncode == 0, known.stderr  # a known queue's empty day is a report


def test_a_survey_port_already_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = callkpi("agi", "--port", str(port), "--db", str(tmp_path / "x.db"))
    assert one_error_line(result) == (
        f"[agi] cannot listen on 127.0.0.1:{port}: Address already in use")


def test_an_email_dry_run_in_a_read_only_directory(store: str, tmp_path: Path,
                                                   needs_root: None) -> None:
    result = callkpi("email", *DAY, "--recipient", "a@example.com", "--dry-run", "--db",
                     store, read_only=tmp_path, cwd=tmp_path)
    assert one_error_line(result) == (f"cannot write {tmp_path}/callkpi-report-2026-11-24.eml:"
                                      f" directory {tmp_path} is not writable")
