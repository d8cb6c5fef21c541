"""The nightly e-mail's systemd units agree with the command they run."""

import shutil
import subprocess

from reports.email_command import email
from systemd_units import UNITS, read_unit, verify_problems

SERVICE, TIMER = UNITS / "callkpi-email.service", UNITS / "callkpi-email.timer"


def test_the_service_sends_yesterday_to_the_recipients_of_its_environment_file():
    service = read_unit(SERVICE)["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"].endswith(" email --yesterday")
    assert service["EnvironmentFile"] == "/etc/callkpi/email.env"  # recipients, password
    to = next(p for p in email.params if p.name == "recipients")
    assert to.envvar == "CALLKPI_EMAIL_TO"  # what the comment tells the admin to set
    assert "CALLKPI_EMAIL_TO=" in SERVICE.read_text()
    assert "PASSWORD" not in service.get("Environment", "")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # click's usage error
    assert int(service["Nice"]) > 0  # batch work, behind the survey server and Asterisk


def test_the_timer_fires_every_morning_and_catches_up_after_downtime():
    timer = read_unit(TIMER)["Timer"]
    assert timer["OnCalendar"] == "*-*-* 06:00:00"
    assert timer["Persistent"] == "true"
    assert timer["Unit"] == SERVICE.name
    assert read_unit(TIMER)["Install"]["WantedBy"] == "timers.target"


def test_units_verify_with_systemd():
    assert verify_problems(SERVICE, TIMER) == []
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # not a systemd host; the parses above still ran
    on_calendar = read_unit(TIMER)["Timer"]["OnCalendar"]
    calendar = subprocess.run([analyze, "calendar", on_calendar], capture_output=True,
                              text=True)
    assert calendar.returncode == 0 and "06:00:00" in calendar.stdout
