"""A replay continued after a crash folds no event twice: ``ups replay --from-seq`` killed with SIGKILL at
several points (while folding, after some profiles were written past the checkpoint) and run again gives
the very rows a full replay gives."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_replay import projection_rows  # tests/ is on sys.path (pytest rootdir import)

from config.settings import Settings
from dataflow.runner import replay

USERS, EVENTS_PER_USER = 6000, 10


def _env(db: Path) -> dict[str, str]:
    return {**os.environ, "UPS_DB": str(db), "UPS_USERS": str(USERS), "UPS_EVENTS_PER_USER": str(EVENTS_PER_USER),
            "UPS_SEED": "3", "UPS_PROFILE_SHARDS": "16"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("replay_crash") / "source.db"
    subprocess.run([sys.executable, "-m", "ups", "generate", "--quiet"], env=_env(db), check=True, capture_output=True)
    return db


def _settings(db: Path) -> Settings:
    return Settings(db=db, users=USERS, events_per_user=EVENTS_PER_USER, seed=3, profile_shards=16)


def _ahead(db: Path, first: int) -> tuple[int, int]:
    """(profiles written at or past ``first``, the profiles checkpoint) as another process sees them."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        try:
            n = conn.execute("SELECT count(*) FROM profiles WHERE last_seq >= ?", (first,)).fetchone()[0]
            cp = conn.execute("SELECT seq FROM checkpoints WHERE projection = 'profiles'").fetchone()
            return int(n), int(cp[0]) if cp else 0
        finally:
            conn.close()
    except sqlite3.OperationalError:  # busy or not there yet
        return 0, 0


def _replay_cmd(source: Path, into: Path, first: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "ups", "replay", "--db", str(source), "--into", str(into), "--from-seq", str(first),
            "--workers", str(workers), "--quiet"]


def _kill_when(proc: subprocess.Popen[bytes], into: Path, first: int, point: str) -> bool:
    """SIGKILL ``proc`` at ``point``: "early" (half a second in: starting or folding, nothing written yet)
    or "written" (profiles written past the checkpoint, the checkpoint not yet moved). False when the
    replay ended before the point."""
    t0 = time.monotonic()
    deadline = t0 + 120
    while proc.poll() is None and time.monotonic() < deadline:
        n, cp = _ahead(into, first)
        if point == "early" and time.monotonic() - t0 > 0.5:
            break
        if point == "written" and n > 0 and cp < first:
            break
        time.sleep(0.001)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=30) == -signal.SIGKILL


def _crash(source: Path, into: Path, first: int, point: str, workers: int) -> None:
    """Run the continuing replay into ``into`` and kill it at ``point``; retried from the same start
    state when the replay outran the poll (the kill must really hit a running replay)."""
    backup = into.with_suffix(".before")
    shutil.copy(into, backup)
    for _ in range(5):
        proc = subprocess.Popen(_replay_cmd(source, into, first, workers), env=_env(source),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if _kill_when(proc, into, first, point):
                return
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for side in (into, into.with_name(into.name + "-wal"), into.with_name(into.name + "-shm")):
            side.unlink(missing_ok=True)
        shutil.copy(backup, into)
    pytest.fail(f"the replay always finished before the kill point {point!r}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("points", "workers"),
    [(("early",), 1), (("written",), 1), (("early", "written"), 1), (("written",), 2)],
    ids=["early", "profiles-ahead-of-checkpoint", "twice", "two-workers"],
)
def test_a_replay_killed_and_continued_equals_a_full_replay(
    source: Path, tmp_path: Path, points: tuple[str, ...], workers: int
) -> None:
    s = _settings(source)
    full = tmp_path / "full.db"
    replay(s, into=full)
    last = projection_rows(full)["checkpoints"][0][1]
    first = last // 2 + 1
    into = tmp_path / "continued.db"
    replay(s, to_seq=first - 1, into=into)
    for point in points:
        _crash(source, into, first, point, workers)
    n, cp = _ahead(into, first)
    assert cp == first - 1  # each kill left the checkpoint where the continuation starts
    if "written" in points:
        assert n > 0  # ... with profiles already written past it
    done = subprocess.run(_replay_cmd(source, into, first, workers), env=_env(source), capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert projection_rows(into) == projection_rows(full)


def test_a_continued_replay_over_profiles_written_past_the_checkpoint_counts_nothing_twice(
    source: Path, tmp_path: Path
) -> None:
    """What a crash between the profile writes and the checkpoint's leaves: the continuation after it
    (here, the checkpoint moved back over a finished replay) gives the full replay's rows."""
    s = _settings(source)
    full = tmp_path / "full.db"
    replay(s, into=full)
    last = projection_rows(full)["checkpoints"][0][1]
    into = tmp_path / "continued.db"
    for first in (last // 3 + 1, 2 * last // 3 + 1):
        replay(s, to_seq=first - 1, into=into, workers=1 if first < last // 2 else 2)
        replay(s, from_seq=first, into=into)
        with sqlite3.connect(into) as conn:
            conn.execute("UPDATE checkpoints SET seq = ? WHERE projection = 'profiles'", (first - 1,))
        replay(s, from_seq=first, into=into, workers=2)
        assert projection_rows(into) == projection_rows(full)
