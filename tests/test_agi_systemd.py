"""The survey server's systemd unit agrees with the command it runs."""

import configparser
import shutil
import subprocess
from pathlib import Path

from agi_plugin.server import STOP_GRACE_S

UNIT = Path(__file__).parent.parent / "asterisk_conf/systemd/callkpi-agi.service"


def test_unit_stops_with_sigterm_after_the_surveys_grace():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].endswith(" agi")
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > STOP_GRACE_S  # never SIGKILL a finishing survey
    assert service["Restart"] == "on-failure"


def test_unit_verifies_with_systemd():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # not a systemd host; the parse above still ran
    result = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines()
                if "/usr/local/bin/callkpi" not in line]  # not installed on a test machine
    assert problems == []
