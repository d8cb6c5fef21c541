#!/usr/bin/env bash
# The whole test suite from a fresh clone, real Asterisk, PostgreSQL and Chromium included:
#   system packages -> virtualenv -> types (mypy) -> sandbox Asterisk (cached in
#   /var/tmp/callkpi) -> pytest (which starts a throwaway PostgreSQL cluster for the run and
#   stops it at the end).
# Extra arguments go to pytest (e.g. scripts/test.sh -k store).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/mypy  # what it checks, and how strictly: [tool.mypy] in pyproject.toml
.venv/bin/callkpi sandbox install
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
