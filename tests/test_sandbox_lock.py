"""The sandbox root is one run's at a time: a second run waits for it (and says for whom)
instead of stopping the first run's Asterisk or installing over it; the run holding it hands
its lock to the script, which then does not wait for itself."""

from __future__ import annotations

import os
import subprocess

import pytest

from simulator.sandbox import SCRIPT, Sandbox, SandboxError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox script runs as root")


def sandbox(tmp_path, **options) -> Sandbox:
    return Sandbox(root=str(tmp_path / "astroot"), state=str(tmp_path / "run"),
                   cache=str(tmp_path / "cache"), **options)


def test_a_second_run_waits_for_the_root_and_names_who_has_it(tmp_path):
    first, second = sandbox(tmp_path), sandbox(tmp_path, lock_wait_s=0.3)
    first.reserve()
    with pytest.raises(SandboxError) as exc:
        second.reserve()
    assert str(exc.value) == (f"the sandbox root {second.root} is still in use by pid "
                              f"{os.getpid()} after 0 s (lock {tmp_path}/astroot.lock)")
    first.release()
    second.reserve()  # free again
    second.release()


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
