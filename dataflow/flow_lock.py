"""One writer of the projections per store: a lock that dies with its holder, one slot per process.

Slot 0 is held by the live flow's process 0 (the only process of a single-process flow), or by a replay
into the database, for as long as it runs. The other processes of a cluster (``-i N -a ADDRESSES``,
N > 0) each hold slot N and join only a slot 0 held for the same cluster (the same addresses); process 0
in turn refuses to start while a slot is held for another cluster. Each holder leaves its record (JSON),
read by whoever is refused, so the message can name it.

Where the slots are depends on the store. A SQLite file: OS file locks beside the database
(``<state_dir>/flow.lock``, ``flow.<N>.lock``; ``flock``, exclusive), so a copy of the database elsewhere
carries no lock at all. A PostgreSQL store: leases in the database itself (session advisory locks,
:mod:`storage.pg_lease`), so the processes of a cluster on different hosts share nothing but the
database URL. Either way the lock goes when its holder ends however it ends (kill -9 included), so no
stale status row or recycled pid can block the next start.
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

from config.db_location import DbLocation, PostgresUrl

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


#: the holder of a lock whose record cannot be read (yet)
_UNNAMED = LockHolder("dataflow", 0, "?", 0.0)


class FlowLocked(Exception):
    """Another flow (or replay) holds the store; the message names it and what to do."""


def _record(path: Path) -> LockHolder | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return _holder(doc)


def _holder(doc: object) -> LockHolder | None:
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
    """The holder of the lock file at ``path`` if it is held now (its record, or an unnamed one), else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _record(path) or _UNNAMED
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class _FileSlots:
    """The slots as lock files in ``state_dir`` (a SQLite store)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._fds: dict[int, int] = {}

    def path(self, slot: int) -> Path:
        return self.state_dir / (LOCK_NAME if slot == 0 else f"flow.{slot}.lock")

    def where(self, slot: int) -> str:
        return str(self.path(slot))

    def take(self, slot: int, me: LockHolder) -> bool:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(slot), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        self._fds[slot] = fd
        return True

    def release(self, slot: int) -> None:
        fd = self._fds.pop(slot, None)
        if fd is not None:
            os.ftruncate(fd, 0)  # no record of a holder that is gone
            os.close(fd)  # closing drops the lock

    def holder(self, slot: int) -> LockHolder | None:
        return holder_of(self.path(slot))

    def held(self) -> list[int]:
        """The process slots (N > 0) held now."""
        slots = sorted(int(p.name.split(".")[1]) for p in self.state_dir.glob("flow.*.lock")
                       if p.name.split(".")[1].isdigit())
        return [n for n in slots if self.holder(n) is not None]


class _LeaseSlots:
    """The slots as leases in a PostgreSQL store (:mod:`storage.pg_lease`)."""

    def __init__(self, url: PostgresUrl) -> None:
        from storage import open_store, pg_lease  # here: a SQLite deployment never loads the driver

        open_store(url).close()  # the leases' records go in its tables: made on a first open
        self.url = url
        self._pg = pg_lease
        self._leases: dict[int, pg_lease.PgLease] = {}

    def where(self, slot: int) -> str:
        return f"the flow lease {slot} in {self.url}"

    def take(self, slot: int, me: LockHolder) -> bool:
        lease = self._pg.PgLease(self.url, slot)
        if not lease.take(asdict(me)):
            return False
        self._leases[slot] = lease
        return True

    def release(self, slot: int) -> None:
        lease = self._leases.pop(slot, None)
        if lease is not None:
            lease.release()

    def holder(self, slot: int) -> LockHolder | None:
        holders = self._pg.lease_holders(self.url)
        return (_holder(holders[slot]) or _UNNAMED) if slot in holders else None

    def held(self) -> list[int]:
        return sorted(n for n in self._pg.lease_holders(self.url) if n > 0)


def _slots(state_dir: Path, db: DbLocation) -> _FileSlots | _LeaseSlots:
    return _LeaseSlots(db) if isinstance(db, PostgresUrl) else _FileSlots(state_dir)


def flow_holder(state_dir: Path, db: DbLocation) -> LockHolder | None:
    """Who writes this store's projections now (a live flow or a replay), if anyone."""
    return _slots(state_dir, db).holder(0)


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
        self.db = db
        self.process_id = process_id or 0
        self.addresses = tuple(addresses) if addresses else None
        self.join_timeout = join_timeout
        self.me = LockHolder(role, os.getpid(), socket.gethostname(), time.time(), process_id, self.addresses)
        self.slots = _slots(state_dir, db)
        self._held = False

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        deadline = time.monotonic() + _PATIENCE_S
        while not self.slots.take(self.process_id, self.me):
            if time.monotonic() > deadline:
                raise FlowLocked(self._refusal(self.slots.holder(self.process_id)))
            time.sleep(0.05)
        self._held = True
        try:
            if self.process_id == 0:
                self._refuse_other_clusters()
            else:
                self._join_process_0()
        except FlowLocked:
            self.release()
            raise

    def release(self) -> None:
        if self._held:
            self.slots.release(self.process_id)
            self._held = False

    def _refusal(self, holder: LockHolder | None) -> str:
        who = holder.describe() if holder else "another process"
        where = self.slots.where(self.process_id)
        if self.process_id == 0:
            return (
                f"{who} is already running on {self.db} (it holds {where}); stop it first "
                "(SIGINT/SIGTERM or a shutdown command), or wait for it to end"
            )
        return f"process {self.process_id} of a cluster is already running on {self.db} ({who} holds {where})"

    def _settled(self, slot: int, ok: Callable[[LockHolder | None], bool]) -> LockHolder | None:
        """The holder of ``slot`` once ``ok`` accepts it, or the one it still refuses after a moment
        (a holder that just took the lock may not have written its record yet)."""
        deadline = time.monotonic() + _SETTLE_S
        while True:
            holder = self.slots.holder(slot)
            if ok(holder) or time.monotonic() > deadline:
                return holder
            time.sleep(0.05)

    def _refuse_other_clusters(self) -> None:
        for slot in self.slots.held():
            holder = self._settled(slot, lambda h: h is None or h.addresses == self.addresses)
            if holder is not None and holder.addresses != self.addresses:
                raise FlowLocked(
                    f"{holder.describe()} is still running on {self.db} (it holds {self.slots.where(slot)}); "
                    "stop it first"
                )

    def _join_process_0(self) -> None:
        """Wait for this cluster's process 0 to hold slot 0; refuse one held by another flow."""
        deadline = time.monotonic() + self.join_timeout
        while True:
            holder = self.slots.holder(0)
            if holder is not None:
                holder = self._settled(0, lambda h: h is not None and h.addresses == self.addresses)
                if holder is not None and holder.addresses == self.addresses:
                    return
                if holder is not None:
                    raise FlowLocked(
                        f"{holder.describe()} is already running on {self.db} (it holds {self.slots.where(0)}); "
                        "this process joins only its own cluster's process 0"
                    )
            if time.monotonic() > deadline:
                raise FlowLocked(
                    f"process 0 of the cluster {';'.join(self.addresses or ())} did not start on {self.db} "
                    f"within {self.join_timeout:.0f} s (nothing holds {self.slots.where(0)}); is process 0 running?"
                )
            time.sleep(0.1)
