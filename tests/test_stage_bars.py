"""`ups init`'s progress: a bar per stage, with the stage's count and rate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.progress import stage
from ups.cmd_api import StageBars


def test_each_stage_gets_a_bar_with_its_count_and_rate(capsys: pytest.CaptureFixture[str]) -> None:
    bars = StageBars(quiet=False)
    gen = stage(bars, "generate", 0.0, 0.5)
    gen(0.5, "50,000/100,000 events")
    gen(1.0, "100,000/100,000 events")
    train = stage(bars, "train", 0.5, 1.0)
    train(0.3, "epoch 1/3 (full): loss 5.1")
    train(1.0, "epoch 3/3 (full): loss 4.2")
    train(1.0, "registered hgt model version 1")  # after the count is complete: the bar stays as it was
    bars(1.0, "ready")
    bars.close()
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    finished = {line.split(":")[0].strip(): line for line in lines}
    assert "100k/100k" in finished["generate"] and "events/s" in finished["generate"]
    assert "3.00/3.00" in finished["train"] and "epoch" in finished["train"]
    assert not any("registered" in line for line in lines)


def test_every_stage_of_init_shows_a_total_and_a_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from config.settings import Settings
    from dataflow.prepare import prepare

    bars = StageBars(quiet=False)
    prepare(Settings(db=tmp_path / "ups.db", users=300, bootstrap_epochs=1, bootstrap_fusion_epochs=20), bars)
    bars.close()
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    finished = {line.split(":")[0].strip(): line for line in lines}
    assert {"generate", "fold", "graph", "train", "embed", "fusion"} <= set(finished), sorted(finished)
    for line in lines:  # from its first line on, each stage's bar shows its total ("0/6", not "0.00it [")
        assert re.search(r"\| *[\d.]+[kM]?/[\d.]+[kM]? \[", line), line
    for name in ("generate", "fold", "graph", "train", "embed", "fusion"):
        line = finished[name]
        # a count with its total ("1.00/1.00", "300/300") and a rate ("15.2events/s" or "6.55s/epoch")
        count = re.search(r"\| *[\d.]+[kM]?/[\d.]+[kM]? \[", line)
        rate = re.search(r"[\d.]+[kM]?[a-z]+/s|[\d.]+s/[a-z]+", line)
        assert count and rate and "?" not in line, line


def test_a_stage_that_works_before_its_first_count_is_timed_from_its_start(capsys: pytest.CaptureFixture[str]) -> None:
    import time

    bars = StageBars(quiet=False)
    train = stage(bars, "train", 0.0, 1.0)
    train(0.0, "")  # the stage starts; its only epoch takes a while before anything can be counted
    time.sleep(1.2)
    train(1.0, "epoch 1/1 (metis): loss 5.05")
    bars.close()
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    # elapsed is the stage's 1+ s, so the rate is about one epoch a second, not thousands
    assert re.search(r"\[00:0[12]<", lines[-1]) and "kepoch/s" not in lines[-1], lines[-1]
