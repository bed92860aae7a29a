"""A throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` from the Debian ``postgresql``
package's binaries, in a temporary directory, listening on 127.0.0.1 at a free port.

It depends on nothing the package set up (Debian's own cluster service may run or not): its own data
directory, its own port, its own socket directory. As root, the server runs as the ``postgres`` user
(PostgreSQL refuses to run as root); as anyone else, as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

#: where Debian puts the server binaries; 15 is bookworm's, others are taken when it is absent
PG_ROOT = Path("/usr/lib/postgresql")


def find_bin_dir() -> Path | None:
    """The directory with ``initdb`` and ``pg_ctl`` (``UPS_TEST_PG_BIN`` overrides), or None."""
    override = os.environ.get("UPS_TEST_PG_BIN")
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None
    found = sorted(PG_ROOT.glob("*/bin/initdb"), key=lambda p: (p.parent.parent.name != "15", p))
    return found[0].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        #: fsync and synchronous commits on, as a real server runs (benchmarks); off for tests
        self.durable = durable
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ups-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.user = "postgres" if self._as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync",
            "--locale", "C",
        )

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False)
        if out.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr.strip()}\n{log}")

    def start(self) -> None:
        # fsync off: a test database need not survive a power cut; the server still survives kill -9
        fast = "" if self.durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} {fast}-c max_connections=200"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "60")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"ups_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)
