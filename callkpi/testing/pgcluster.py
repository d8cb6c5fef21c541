"""A throwaway PostgreSQL cluster for tests and benchmarks: Debian's `postgresql` binaries,
initdb in a temporary directory, one server on a free loopback port, gone when stopped.

PostgreSQL refuses to run as root; run as root, the cluster belongs to the `postgres` user
Debian's package creates (as an unprivileged user, to that user). Two clusters on one machine
never meet: each has its own directory and port.

    python -m callkpi.testing.pgcluster     # prints a URL, serves until Ctrl-C
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 60
# a role that must give its password (every other connection is trusted): for the tests of
# how the store finds a password
PASSWORD_ROLE = "callkpi_pw"
# tests only: a crash of the machine may lose the cluster, which is thrown away anyway
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class ClusterError(Exception):
    """The cluster cannot be set up here (no binaries, no postgres user, no start)."""


def bindir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ClusterError("PostgreSQL is not installed (Debian: apt-get install postgresql)")


class Cluster:
    """`start()` it, create databases, `stop()` it (which removes its directory)."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.port = 0
        self.dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._user = _cluster_user()
        self._admin: dict[str, Any] = {}  # dbname -> a superuser connection

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> "Cluster":
        bins = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="callkpi-pg-"))
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        data = self.dir / "data"
        self._run([str(bins / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                   "-E", "UTF8", "--locale=C.UTF-8"])
        hba = data / "pg_hba.conf"
        hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
                       + hba.read_text())
        for _attempt in range(5):  # the port may be taken between the pick and the bind
            self.port = _free_port()
            if self._serve(bins):
                return self
        raise ClusterError(f"PostgreSQL did not start; its log:\n{self._log()}")

    def stop_server(self) -> None:
        """Stop the server (fast shutdown: clients are cut off), keeping its data."""
        for conn in self._admin.values():
            conn.close()
        self._admin.clear()
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGINT)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def start_server(self) -> None:
        """Start the stopped server again, on the same port with the same data."""
        if not self._serve(bindir()):
            raise ClusterError(f"PostgreSQL did not start again; its log:\n{self._log()}")

    def _serve(self, bins: Path) -> bool:
        assert self.dir is not None
        settings = () if self.durable else FAST_SETTINGS
        args = [str(bins / "postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "max_connections=300", *(a for s in settings for a in ("-c", s))]
        with open(self.dir / "log", "ab") as log:
            self._process = subprocess.Popen(self._as_user(args), stdout=log, stderr=log,
                                             start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self._ready(bins)
            time.sleep(0.05)
        self.stop()
        raise ClusterError(f"PostgreSQL did not start within {START_TIMEOUT_S} s")

    def _ready(self, bins: Path) -> bool:
        """Accepting connections (not still starting up)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ping = subprocess.run([str(bins / "pg_isready"), "-q", "-h", "127.0.0.1",
                                   "-p", str(self.port)], check=False)
            if ping.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        """Run one statement as the superuser (CREATE / DROP DATABASE ...)."""
        import psycopg  # the PostgreSQL store's driver

        if dbname not in self._admin:
            self._admin[dbname] = psycopg.connect(self.url(dbname), autocommit=True)
        self._admin[dbname].execute(statement)

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected), then the directory goes."""
        self.stop_server()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(self._as_user(args), capture_output=True, check=False)
        if done.returncode:
            raise ClusterError(f"{Path(args[0]).name} failed: "
                               f"{done.stderr.decode(errors='replace').strip()}")

    def _as_user(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self._user.pw_name, "--", *args] if self._user else args

    def _log(self) -> str:
        try:
            return (self.dir / "log").read_text(errors="replace")[-2000:] if self.dir else ""
        except OSError:
            return ""


def _cluster_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("running as root and there is no postgres user to run "
                           "PostgreSQL as (Debian's postgresql package creates it)") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop cleanly on SIGTERM too
    with Cluster(durable=True) as cluster:
        cluster.sql("CREATE DATABASE callkpi")
        print(cluster.url("callkpi"), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
