"""The survey server's systemd unit agrees with the command it runs."""

from agi_plugin.server import STOP_GRACE_S
from systemd_units import UNITS, read_unit, verify_problems

UNIT = UNITS / "callkpi-agi.service"


def test_unit_stops_with_sigterm_after_the_surveys_grace():
    service = read_unit(UNIT)["Service"]
    assert service["ExecStart"].endswith(" agi")
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > STOP_GRACE_S  # never SIGKILL a finishing survey
    assert service["Restart"] == "on-failure"


def test_unit_verifies_with_systemd():
    assert verify_problems(UNIT) == []
