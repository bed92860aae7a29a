"""The scoring commands as a user types them: rules, score, explain, recommend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scoring_support import SMALL, scoring_db

from ups.cli import main


@pytest.fixture
def db(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> str:
    return str(scoring_db(tmp_path_factory.getbasetemp(), tmp_path / "cli.db", SMALL))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_rules_commands(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "rules", "list", "--db", db, "--json")
    listed = json.loads(out)
    assert rc == 0 and [r["name"] for r in listed["rules"]] == ["at_risk_churn", "digital_enthusiast",
                                                                 "high_value_user", "loyal_user"]
    rc, out, _ = run(capsys, "rules", "add", "vip", "--db", db, "--condition", "monthly_fee >= 200",
                     "--weight", "0.5", "--description", "pays a lot")
    assert rc == 0 and "rule vip created" in out
    rc, out, _ = run(capsys, "rules", "update", "vip", "--db", db, "--enabled", "false")
    assert rc == 0 and "rule vip updated" in out
    rc, out, _ = run(capsys, "rules", "list", "--db", db)
    assert "vip" in out and "(disabled)" in out and f"rules version {listed['rules_version']}" not in out
    rc, _, err = run(capsys, "rules", "add", "bad", "--db", db, "--condition", "().__class__", "--weight", "1")
    assert rc == 2 and "attribute access .__class__ is not allowed" in err
    rc, _, err = run(capsys, "rules", "add", "vip", "--db", db, "--condition", "True", "--weight", "1")
    assert rc == 2 and "already exists" in err
    rc, out, _ = run(capsys, "rules", "preview", "--db", db, "tenure_months >= 0", "--sample", "50")
    assert rc == 0 and out.strip() == "fires for 50 of 50 sampled users"
    rc, out, _ = run(capsys, "rules", "delete", "vip", "--db", db)
    assert rc == 0 and "rule vip deleted" in out
    rc, _, err = run(capsys, "rules", "delete", "vip", "--db", db)
    assert rc == 2 and "no rule named 'vip'" in err


def test_score_explain_recommend_commands(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "score", "U0000003", "--db", db, "--json")
    score = json.loads(out)
    assert rc == 0 and score["user_id"] == "U0000003" and 0 < score["score"] < 1
    assert score["fusion_version"] is None and len(score["rules"]) == 4
    rc, out, _ = run(capsys, "score", "U0000003", "--db", db)
    assert rc == 0 and f"score {score['score']:.4f}" in out and "fusion version untrained" in out
    rc, out, _ = run(capsys, "explain", "U0000003", "--db", db, "--mode", "grouped", "--json")
    exp = json.loads(out)
    assert rc == 0 and abs(exp["base_value"] + sum(c["value"] for c in exp["contributions"]) - exp["score"]) < 1e-3
    rc, out, _ = run(capsys, "explain", "U0000003", "--db", db, "--top-k", "3")
    assert rc == 0 and "raising:" in out and "lowering:" in out
    rc, out, _ = run(capsys, "recommend", "U0000003", "--db", db, "--json")
    assert rc == 0 and isinstance(json.loads(out), list)
    rc, _, err = run(capsys, "score", "NOBODY", "--db", db)
    assert rc == 2 and "no profile for user 'NOBODY'" in err
    rc, _, err = run(capsys, "score", "U1", "--db", str(Path(db).with_name("missing.db")))
    assert rc == 2 and "no database" in err
