"""The flow's Bytewax recovery state beside the database: made when missing, checked before every run,
and set aside on request (``ups dataflow --reset-recovery``).

The recovery state holds only what the event log gives again, so setting it aside loses nothing
stored: the next run folds the profiles from the log from its start (the append step begins at seq 0),
the mock stream continues after its newest event in the log, and a file or topic is read again from its
start (the append skips what the log already holds). A damaged partition, on the other hand, would make
Bytewax fail deep inside its Rust core with a message that names neither the file nor a way out; it is
found here first and reported as one clear error.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from config.settings import Settings
from storage.recovery_partitions import PartitionUnreadable, partition_meta

from .errors import FlowConfigError

META = "ups-flow.json"
RESET_HINT = (
    "`ups dataflow --reset-recovery` sets it aside and runs the flow, rebuilding its state from the event log"
)


class RecoveryDamaged(FlowConfigError):
    """A recovery partition (or its description) cannot be read; the message names the file and the fix."""


def _damaged(path: Path, problem: str) -> RecoveryDamaged:
    return RecoveryDamaged(
        f"the dataflow's recovery state is damaged: {path}: {problem}. {RESET_HINT} (nothing stored is lost)"
    )


def check_partitions(parts: list[Path], mine: set[int]) -> set[int]:
    """Every partition in ``parts`` readable, all of one set; of this process's share ``mine``, all or
    none there. The indexes found."""
    metas: dict[Path, tuple[int, int]] = {}
    for path in parts:
        try:
            metas[path] = partition_meta(path)
        except PartitionUnreadable as err:
            raise _damaged(path, str(err)) from None
    counts = {count for _, count in metas.values()}
    if len(counts) > 1:
        raise _damaged(parts[0].parent, f"its partitions disagree on how many there are ({sorted(counts)})")
    found = {index for index, _ in metas.values()}
    missing = mine - found
    if found & mine and missing:
        raise _damaged(parts[0].parent, f"partition(s) {sorted(missing)} of {counts.pop()} are missing")
    return found


def _make_share(rdir: Path, count: int, mine: set[int]) -> None:
    """Partitions ``mine`` of a new set of ``count``, made aside and moved in whole (a process sharing
    the folder sees each one complete or not at all)."""
    rdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=rdir.parent, prefix=".recovery-new-") as tmp:
        init_db_dir(Path(tmp), count)  # what `python -m bytewax.recovery DIR N` does
        for index in sorted(mine):
            (Path(tmp) / f"part-{index}.sqlite3").replace(rdir / f"part-{index}.sqlite3")


def _saved_meta(meta_path: Path) -> dict[str, object]:
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _damaged(meta_path, f"cannot be read ({err})") from None
    if not isinstance(saved, dict):
        raise _damaged(meta_path, "not a JSON object")
    return saved


def ensure_recovery(settings: Settings, *, process_id: int = 0, processes: int = 1) -> RecoveryConfig:
    """Bytewax recovery partitions under ``state_dir/recovery``, checked for damage and against the
    settings that shape the flow's state. Bytewax needs every partition somewhere in the cluster, not
    every partition on every process: process ``process_id`` of ``processes`` makes its share (the
    partitions whose index modulo ``processes`` is its own) when none of it is there, so the hosts of a
    cluster need no shared folder, and processes sharing one folder fill it together."""
    rdir = settings.recovery_dir
    count = settings.recovery_partitions
    mine = {i for i in range(count) if i % processes == process_id}
    parts = sorted(rdir.glob("part-*.sqlite3")) if rdir.is_dir() else []
    found = check_partitions(parts, mine)
    if mine and not found & mine:
        _make_share(rdir, count, mine)
    meta_path = rdir / META
    if meta_path.exists():
        shards = _saved_meta(meta_path).get("profile_shards")
        if shards != settings.profile_shards:
            raise FlowConfigError(
                f"the recovery state in {rdir} was made with UPS_PROFILE_SHARDS={shards}, not "
                f"{settings.profile_shards}; use that value, or {RESET_HINT}"
            )
    else:
        rdir.mkdir(parents=True, exist_ok=True)
        tmp = meta_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"profile_shards": settings.profile_shards}))
        tmp.replace(meta_path)
    return RecoveryConfig(rdir)


def reset_recovery(settings: Settings) -> Path | None:
    """Set the recovery state aside (renamed, kept for inspection); returns where it went, None when
    there was none. The caller holds the store's lock: no flow may be using it."""
    rdir = settings.recovery_dir
    if not rdir.exists():
        return None
    aside = rdir.with_name(f"{rdir.name}.reset-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        aside = rdir.with_name(f"{rdir.name}.reset-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        n += 1
    rdir.rename(aside)
    return aside
