"""A database whose model an older UPS registered: `ups init`/`ups up` bring it up to date themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings
from dataflow.prepare import prepare
from scoring.fusion import FORMAT
from scoring.neighbourhood import NODE_TYPE as NEIGHBOURHOOD
from scoring.service import ScoringService
from storage.event_store import EventStore
from ups.cli import main


def _quiet(fraction: float, message: str = "") -> None:
    pass


def _make_old(db: Path, neighbourhoods: bool) -> None:
    """What a UPS before the call neighbourhoods left: a fusion of weight layout 2 and (unless
    ``neighbourhoods``) user embeddings with no neighbourhood rows."""
    with EventStore(db) as store, store.transaction() as conn:
        conn.execute("UPDATE models SET config = json_set(config, '$.format', 2) WHERE kind = 'fusion'")
        if not neighbourhoods:
            conn.execute("DELETE FROM embeddings WHERE node_type = ?", (NEIGHBOURHOOD,))


def test_init_re_embeds_and_retrains_the_fusion_of_an_older_ups_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for k, v in {"UPS_BOOTSTRAP_EPOCHS": "1", "UPS_BOOTSTRAP_FUSION_EPOCHS": "20"}.items():
        monkeypatch.setenv(k, v)
    s = Settings(db=tmp_path / "ups.db", users=300)
    prepare(s, _quiet)
    _make_old(s.db, neighbourhoods=False)
    with EventStore(s.db) as store:
        users, old_fusion = store.embeddings.count("user"), store.models.latest_version("fusion")
        uid = store.profiles.ids(limit=1)[0]
    with ScoringService(s) as svc:
        before = svc.score(uid)
    assert before["embedding_missing"]  # (and the fusion, of a layout this UPS does not read, is not used)

    assert main(["init", "--db", str(s.db), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "weight layout 2" in out.err and f"no call neighbourhoods ({NEIGHBOURHOOD})" in out.err
    assert "re-embedding every node and retraining the fusion" in out.err
    assert "re-embedded every node and retrained the fusion" in out.out
    with EventStore(s.db) as store:
        assert store.embeddings.count(NEIGHBOURHOOD) == users
        fusion = store.models.latest("fusion")
        assert fusion is not None and fusion.version == old_fusion + 1 and fusion.config["format"] == FORMAT
    with ScoringService(s) as svc:
        after = svc.score(uid)
    assert after["fusion_version"] == old_fusion + 1 and not after["embedding_missing"]

    # an old fusion over current neighbourhoods: retrained, nothing re-embedded
    _make_old(s.db, neighbourhoods=True)
    said: list[str] = []
    summary = prepare(s, _quiet, say=said.append)
    assert len(said) == 1 and "retraining the fusion" in said[0] and "re-embedding" not in said[0]
    assert summary.upgraded is not None and "embeddings" not in summary.upgraded
    assert summary.upgraded["fusion"]["fusion_version"] == old_fusion + 2
    # up to date: nothing to do, nothing said
    assert prepare(s, _quiet, say=said.append).steps == [] and len(said) == 1
