"""The report as JSON: the build_report() dict as it is (docs/reports.md shows the shape)."""

from __future__ import annotations

import json
from typing import Any


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, ensure_ascii=False) + "\n"
