"""The suite's own rule: with env CI set, a skipped test fails the run, a PostgreSQL test
above all (a backend nobody tested); without CI a skip stays a skip. Checked by running
pytest on small test files beside a copy of this suite's conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).parent / "conftest.py"

SKIPS_POSTGRESQL = '''
import pytest

def test_on_each_backend(backend):
    if backend == "postgresql":
        pytest.skip("no PostgreSQL here")
'''

NO_CLUSTER = '''
import pytest
from callkpi.testing import pgcluster

def no_binaries():
    raise pgcluster.ClusterError("PostgreSQL is not installed")

def test_a_store(monkeypatch, request, backend):
    monkeypatch.setattr(pgcluster, "bindir", no_binaries)
    request.getfixturevalue("store_url")
'''

MODULE_SKIPPED = '''
import pytest

pytest.importorskip("no_such_module_here")

def test_never_collected(backend):
    pass
'''

EXPECTED_FAILURE = '''
import pytest

@pytest.mark.xfail(strict=True, reason="a known defect")
def test_known(backend):
    assert False
'''


def run_suite(tmp_path: Path, test: str, ci: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_it.py").write_text(test)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "asyncio_default_fixture_loop_scope=function", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "not-ci"])
def test_a_skipped_postgresql_test_fails_ci_only(tmp_path, ci):
    done = run_suite(tmp_path, SKIPS_POSTGRESQL, ci)
    assert "1 passed, 1 skipped" in done.stdout, done.stdout
    if ci:
        assert done.returncode == 1, done.stdout
        assert "CI: 1 test(s) skipped; in CI a skip is a failure:" in done.stdout
        assert "test_it.py::test_on_each_backend[postgresql]" in done.stdout
    else:
        assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "not-ci"])
def test_no_postgresql_server_is_an_error_in_ci_and_a_skip_elsewhere(tmp_path, ci):
    done = run_suite(tmp_path, NO_CLUSTER, ci)
    if ci:
        assert done.returncode == 1 and "1 failed, 1 passed" in done.stdout, done.stdout
        assert "PostgreSQL test cluster unavailable: PostgreSQL is not installed" in done.stdout
    else:
        assert done.returncode == 0 and "1 passed, 1 skipped" in done.stdout, done.stdout


def test_an_expected_failure_is_not_a_skip(tmp_path):
    done = run_suite(tmp_path, EXPECTED_FAILURE, ci=True)
    assert done.returncode == 0 and "2 xfailed" in done.stdout, done.stdout


def test_a_module_skipped_whole_fails_ci(tmp_path):
    done = run_suite(tmp_path, MODULE_SKIPPED, ci=True)
    assert done.returncode == 1 and "1 skipped" in done.stdout, done.stdout
    assert "CI: 1 test(s) skipped" in done.stdout and "test_it.py" in done.stdout
