"""The listener's systemd unit agrees with the command it runs."""

import configparser
import shutil
import subprocess
from pathlib import Path

from ami_listener.commands import EXIT_LOGIN_REJECTED

UNIT = Path(__file__).parent.parent / "asterisk_conf/systemd/callkpi-listen.service"


def test_unit_restarts_on_failure_except_a_rejected_login():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].endswith(" listen")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(EXIT_LOGIN_REJECTED)
    assert service["EnvironmentFile"] == "/etc/callkpi/listen.env"  # the secret, not the unit
    assert "SECRET" not in service.get("Environment", "")
    assert service["KillSignal"] == "SIGTERM"


def test_unit_verifies_with_systemd():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # not a systemd host; the parse above still ran
    result = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines()
                if "/usr/local/bin/callkpi" not in line]  # not installed on a test machine
    assert problems == []
