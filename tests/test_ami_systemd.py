"""The listener's and the queue_log follower's systemd units agree with the commands they run."""

from ami_listener.manager import LoginError
from systemd_units import UNITS, read_unit, verify_problems

UNIT = UNITS / "callkpi-listen.service"
TAIL_UNIT = UNITS / "callkpi-tail.service"


def test_unit_restarts_on_failure_except_a_rejected_login():
    service = read_unit(UNIT)["Service"]
    assert service["ExecStart"].endswith(" listen")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(LoginError.exit_code)
    assert service["EnvironmentFile"] == "/etc/callkpi/listen.env"  # the secret, not the unit
    assert "SECRET" not in service.get("Environment", "")
    assert service["KillSignal"] == "SIGTERM"


def test_the_follower_tails_the_configured_queue_log_and_may_read_it():
    service = read_unit(TAIL_UNIT)["Service"]
    assert service["ExecStart"].endswith(" tail")  # the path comes from [queue_log] path
    assert service["SupplementaryGroups"] == "asterisk"  # queue_log is asterisk's
    assert service["KillSignal"] == "SIGTERM"  # stores what it read, with its checkpoint
    assert service["Restart"] == "on-failure"


def test_units_verify_with_systemd():
    assert verify_problems(UNIT, TAIL_UNIT) == []
