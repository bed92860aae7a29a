"""One writer of the projections per store: an OS file lock beside the database that dies with its holder.

``<state_dir>/flow.lock`` is held (``flock``, exclusive) by the live flow's process 0 (the only process
of a single-process flow), or by a replay into the database, for as long as it runs. The kernel drops
the lock when the process ends however it ends (kill -9 included), so no stale status row or recycled
pid can block the next start, and a copy of the database elsewhere carries no lock at all.

The other processes of a cluster (``-i N -a ADDRESSES``, N > 0) each hold ``flow.<N>.lock`` and join
only a ``flow.lock`` held for the same cluster (the same addresses); process 0 in turn refuses to start
while a per-process lock is held for another cluster. Each lock file holds its holder's record (JSON),
read by whoever is refused, so the message can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

from config.db_location import DbLocation

LOCK_NAME = "flow.lock"

#: how long an acquire keeps trying before it believes the lock is held: a probe (:func:`holder_of`)
#: takes the lock shared for an instant, which must not make a starting flow give up
_PATIENCE_S = 1.0
#: how long a record that names another flow may be stale (a new holder writes its record just after
#: taking the lock) before the process believes it
_SETTLE_S = 1.0


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: written into the lock file by its holder."""

    role: str  # "dataflow" or "replay"
    pid: int
    host: str
    started_at: float
    process_id: int | None = None
    addresses: tuple[str, ...] | None = None

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}"
        if self.addresses:
            where += f", process {self.process_id} of the cluster {';'.join(self.addresses)}"
        return f"a {self.role} ({where})"


class FlowLocked(Exception):
    """Another flow (or replay) holds the store; the message names it and what to do."""


def _record(path: Path) -> LockHolder | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    try:
        addresses = doc.get("addresses")
        return LockHolder(
            role=str(doc.get("role", "dataflow")),
            pid=int(doc["pid"]),
            host=str(doc.get("host", "?")),
            started_at=float(doc.get("started_at", 0.0)),
            process_id=doc.get("process_id"),
            addresses=tuple(addresses) if addresses else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def holder_of(path: Path) -> LockHolder | None:
    """The holder of the lock at ``path`` if it is held now (its record, or an unnamed one), else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _record(path) or LockHolder("dataflow", 0, "?", 0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def flow_holder(state_dir: Path) -> LockHolder | None:
    """Who writes this store's projections now (a live flow or a replay), if anyone."""
    return holder_of(Path(state_dir) / LOCK_NAME)


class FlowLock:
    """The store's writer lock for this process (a context manager); :meth:`acquire` raises
    :class:`FlowLocked` when another flow holds it."""

    def __init__(
        self,
        state_dir: Path,
        db: DbLocation,
        *,
        role: str = "dataflow",
        process_id: int | None = None,
        addresses: Sequence[str] | None = None,
        join_timeout: float = 60.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.db = db
        self.process_id = process_id or 0
        self.addresses = tuple(addresses) if addresses else None
        self.join_timeout = join_timeout
        self.me = LockHolder(role, os.getpid(), socket.gethostname(), time.time(), process_id, self.addresses)
        name = LOCK_NAME if self.process_id == 0 else f"flow.{self.process_id}.lock"
        self.path = self.state_dir / name
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + _PATIENCE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise FlowLocked(self._refusal(holder_of(self.path))) from None
                time.sleep(0.05)
        self._fd = fd
        doc = asdict(self.me)
        doc["addresses"] = list(self.addresses) if self.addresses else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(doc).encode(), 0)
        try:
            if self.process_id == 0:
                self._refuse_other_clusters()
            else:
                self._join_process_0()
        except FlowLocked:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no record of a holder that is gone
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def _refusal(self, holder: LockHolder | None) -> str:
        who = holder.describe() if holder else "another process"
        if self.process_id == 0:
            return (
                f"{who} is already running on {self.db} (it holds {self.path}); stop it first "
                "(SIGINT/SIGTERM or a shutdown command), or wait for it to end"
            )
        return f"process {self.process_id} of a cluster is already running on {self.db} ({who} holds {self.path})"

    def _settled(self, path: Path, ok: Callable[[LockHolder | None], bool]) -> LockHolder | None:
        """The holder of ``path`` once ``ok`` accepts it, or the one it still refuses after a moment
        (a holder that just took the lock may not have written its record yet)."""
        deadline = time.monotonic() + _SETTLE_S
        while True:
            holder = holder_of(path)
            if ok(holder) or time.monotonic() > deadline:
                return holder
            time.sleep(0.05)

    def _refuse_other_clusters(self) -> None:
        for path in sorted(self.state_dir.glob("flow.*.lock")):
            holder = self._settled(path, lambda h: h is None or h.addresses == self.addresses)
            if holder is not None and holder.addresses != self.addresses:
                raise FlowLocked(
                    f"{holder.describe()} is still running on {self.db} (it holds {path}); stop it first"
                )

    def _join_process_0(self) -> None:
        """Wait for this cluster's process 0 to hold ``flow.lock``; refuse one held by another flow."""
        path = self.state_dir / LOCK_NAME
        deadline = time.monotonic() + self.join_timeout
        while True:
            holder = holder_of(path)
            if holder is not None:
                holder = self._settled(path, lambda h: h is not None and h.addresses == self.addresses)
                if holder is not None and holder.addresses == self.addresses:
                    return
                if holder is not None:
                    raise FlowLocked(
                        f"{holder.describe()} is already running on {self.db} (it holds {path}); this process "
                        "joins only its own cluster's process 0"
                    )
            if time.monotonic() > deadline:
                raise FlowLocked(
                    f"process 0 of the cluster {';'.join(self.addresses or ())} did not start on {self.db} "
                    f"within {self.join_timeout:.0f} s (nothing holds {path}); is process 0 running?"
                )
            time.sleep(0.1)
