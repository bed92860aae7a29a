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


def check_partitions(parts: list[Path]) -> None:
    """Every partition readable, and together a complete set (as Bytewax needs to resume)."""
    metas: dict[Path, tuple[int, int]] = {}
    for path in parts:
        try:
            metas[path] = partition_meta(path)
        except PartitionUnreadable as err:
            raise _damaged(path, str(err)) from None
    counts = {count for _, count in metas.values()}
    if len(counts) > 1:
        raise _damaged(parts[0].parent, f"its partitions disagree on how many there are ({sorted(counts)})")
    count = counts.pop()
    missing = set(range(count)) - {index for index, _ in metas.values()}
    if missing:
        raise _damaged(parts[0].parent, f"partition(s) {sorted(missing)} of {count} are missing")


def _saved_meta(meta_path: Path) -> dict[str, object]:
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _damaged(meta_path, f"cannot be read ({err})") from None
    if not isinstance(saved, dict):
        raise _damaged(meta_path, "not a JSON object")
    return saved


def ensure_recovery(settings: Settings, *, create: bool = True) -> RecoveryConfig:
    """Bytewax recovery partitions under ``state_dir/recovery`` (made when missing), checked for damage
    and against the settings that shape the flow's state. In a cluster only process 0 creates them
    (``create``); the others wait for them."""
    rdir = settings.recovery_dir
    meta_path = rdir / META
    deadline = time.monotonic() + 60
    while not create and not meta_path.exists():
        if time.monotonic() > deadline:
            raise FlowConfigError(f"no recovery partitions appeared in {rdir}; is process 0 running?")
        time.sleep(0.1)
    parts = sorted(rdir.glob("part-*.sqlite3")) if rdir.is_dir() else []
    if not parts and create:
        rdir.mkdir(parents=True, exist_ok=True)
        init_db_dir(rdir, settings.recovery_partitions)  # what `python -m bytewax.recovery DIR N` does
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"profile_shards": settings.profile_shards}))
        tmp.replace(meta_path)  # written last: its presence says the partitions are ready
        return RecoveryConfig(rdir)
    check_partitions(parts)
    if meta_path.exists():
        shards = _saved_meta(meta_path).get("profile_shards")
        if shards != settings.profile_shards:
            raise FlowConfigError(
                f"the recovery state in {rdir} was made with UPS_PROFILE_SHARDS={shards}, not "
                f"{settings.profile_shards}; use that value, or {RESET_HINT}"
            )
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
