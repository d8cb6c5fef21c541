"""Reading the shipped systemd units, and systemd's own check of them (where systemd exists)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

UNITS = Path(__file__).parent.parent / "asterisk_conf" / "systemd"


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = CaseSensitiveParser(strict=False, interpolation=None)
    unit.read(path)
    return unit


class CaseSensitiveParser(configparser.ConfigParser):
    """Keys as written: systemd's are case-sensitive."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def verify_problems(*paths: Path) -> list[str]:
    """What `systemd-analyze verify` objects to ([] on a host without systemd)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return []
    result = subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True,
                            text=True)
    return [line for line in result.stderr.splitlines()
            if "/usr/local/bin/callkpi" not in line]  # not installed on a test machine
