"""The sandbox root is one run's at a time: a second run waits for it (and says for whom)
instead of stopping the first run's Asterisk or installing over it; the run holding it hands
its lock to the script, which then does not wait for itself."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from simulator.sandbox import SCRIPT, Sandbox, SandboxError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox script runs as root")


def sandbox(tmp_path, **options) -> Sandbox:
    return Sandbox(root=str(tmp_path / "astroot"), state=str(tmp_path / "run"),
                   cache=str(tmp_path / "cache"), **options)


def reserve_in_another_process(box: Sandbox, wait_s: float) -> subprocess.CompletedProcess:
    code = ("import sys; from simulator.sandbox import Sandbox, SandboxError\n"
            f"box = Sandbox(root={box.root!r}, state={box.state!r}, lock_wait_s={wait_s})\n"
            "try:\n    box.reserve()\nexcept SandboxError as exc:\n    sys.exit(str(exc))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_a_second_run_waits_for_the_root_and_names_who_has_it(tmp_path):
    first = sandbox(tmp_path)
    first.reserve()
    second = reserve_in_another_process(first, 0.3)
    assert (second.returncode, second.stderr) == (1, (
        f"the sandbox root {first.root} is still in use by pid {os.getpid()} after 0 s "
        f"(lock {tmp_path}/astroot.lock)\n"))
    also = dataclasses.replace(first)  # another Sandbox of the same run shares the root
    also.reserve()
    also.release()
    first.release()
    assert reserve_in_another_process(first, 0.3).returncode == 0  # free again


def test_the_script_alone_waits_for_a_held_root_and_says_so(tmp_path):
    holder = sandbox(tmp_path)
    holder.reserve()
    try:
        env = {**os.environ, "ASTROOT": holder.root, "ASTSTATE": holder.state, "LOCK_WAIT": "1"}
        env.pop("ASTLOCK_FD", None)
        result = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1
        assert (f"ERROR: the sandbox root {holder.root} is still in use by pid {os.getpid()} "
                f"after 1s (lock {holder.root}.lock)") in result.stderr
        holder.stop()  # the holder's own commands do not wait for themselves
        result = subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr  # and the root is free after its stop
    finally:
        holder.release()


def test_a_failure_names_its_log(tmp_path):
    box = sandbox(tmp_path)
    (tmp_path / "astroot").mkdir()
    (tmp_path / "astroot" / ".astsandbox-installed").write_text("fake\n")  # no asterisk in it
    try:
        with pytest.raises(SandboxError) as exc:
            box.start()
    finally:
        box.stop()  # unmounts the /proc start mounted in the root
    assert str(exc.value) == ("asterisk exited during start; its console log: "
                              f"{tmp_path}/run/asterisk-console.log")
