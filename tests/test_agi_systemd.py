"""The survey server's systemd unit agrees with the command it runs."""

from agi_plugin.server import RESERVED_FDS, STOP_GRACE_S, WRITE_GRACE_S
from callkpi.config import AgiConfig
from systemd_units import UNITS, read_unit, verify_problems

UNIT = UNITS / "callkpi-agi.service"


def test_unit_stops_with_sigterm_after_the_surveys_grace():
    service = read_unit(UNIT)["Service"]
    assert service["ExecStart"].endswith(" agi")
    assert service["KillSignal"] == "SIGTERM"
    # never SIGKILL a finishing survey, nor the writing of its answers
    assert float(service["TimeoutStopSec"]) > STOP_GRACE_S + WRITE_GRACE_S
    assert service["Restart"] == "on-failure"


def test_unit_runs_ahead_of_batch_work():
    assert int(read_unit(UNIT)["Service"]["Nice"]) < 0  # callers wait on its replies


def test_unit_has_room_for_every_connection():
    service = read_unit(UNIT)["Service"]
    assert int(service["LimitNOFILE"]) >= AgiConfig().max_connections + RESERVED_FDS


def test_unit_verifies_with_systemd():
    assert verify_problems(UNIT) == []
