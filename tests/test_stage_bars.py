"""`ups init`'s progress: a bar per stage, with the stage's count and rate."""

from __future__ import annotations

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
