from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ups.cli import main


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ups", *args], capture_output=True, text=True, env=env, timeout=300)


def test_generate_stats_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "a" / "u.db"
    assert main(["generate", "--db", str(db), "--users", "50", "--events-per-user", "4", "--seed", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "for 50 users (seed 5)" in out and "events/s" in out
    # re-running appends nothing new
    assert main(["generate", "--db", str(db), "--users", "50", "--events-per-user", "4", "--seed", "5", "--quiet"]) == 0
    assert " 0 new" in capsys.readouterr().out
    # another config (or generator version) would give the same users a second history: refused
    other = run("generate", "--db", str(db), "--users", "50", "--events-per-user", "4", "--seed", "6", "--quiet")
    assert other.returncode == 2 and "already holds a generated dataset of another config" in other.stderr, other.stderr
    assert "--force" in other.stderr and "Traceback" not in other.stderr

    assert main(["stats", "--db", str(db), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["by_type"]["user.registered"] == 50 and st["dead_letters"] == 0
    assert st["events"] == st["last_seq"] == sum(st["by_type"].values())

    for fmt in ("csv", "parquet"):
        assert main(["export", "--db", str(db), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        read = pd.read_csv if fmt == "csv" else pd.read_parquet
        users = read(tmp_path / fmt / f"users.{fmt}")
        events = read(tmp_path / fmt / f"events.{fmt}")
        assert len(users) == 50 and {"user_id", "monthly_fee", "plan_type"} <= set(users.columns)
        assert len(read(tmp_path / fmt / f"products.{fmt}")) > 0 and len(read(tmp_path / fmt / f"apps.{fmt}")) > 0
        assert len(events) == st["events"] and list(events["seq"]) == list(range(1, st["events"] + 1))

    # --force appends the other dataset anyway
    assert main(["generate", "--db", str(db), "--users", "50", "--events-per-user", "4", "--seed", "6", "--quiet",
                 "--force"]) == 0
    capsys.readouterr()
    assert main(["stats", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by_type"]["user.registered"] == 100


def test_config_prints_effective_settings(tmp_path: Path) -> None:
    env = {**__import__("os").environ, "UPS_DEVICE": "cpu", "UPS_USERS": "123", "UPS_ADMIN_TOKEN": "s3cret-token-0123456"}
    r = run("config", "--db", str(tmp_path / "x.db"), env=env)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["device"] == "cpu" and cfg["users"] == 123 and cfg["db"] == str(tmp_path / "x.db")
    assert cfg["admin_token"] == "***" and cfg["state_dir"] == str(tmp_path / "x.state")


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "--users", "abc"], "argument --users: expected a whole number, got 'abc'"),
        (["generate", "--users", "-3"], "must be at least 1"),
        (["generate", "--label-share", "1.5"], "must be within [0, 1]"),
        (["generate", "--users", "1"], "users: Input should be greater than or equal to 2"),
        (["export", "--format", "xml", "--out", "x"], "invalid choice: 'xml'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["stats"], "no database at"),
    ],
)
def test_bad_arguments_give_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    r = run(*args, "--db", str(tmp_path / "none" / "u.db")) if args[0] != "frobnicate" else run(*args)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_env_setting_is_reported(tmp_path: Path) -> None:
    env = {**__import__("os").environ, "UPS_DEVICE": "tpu"}
    r = run("config", env=env)
    assert r.returncode != 0 and "device" in r.stderr and "Traceback" not in r.stderr


def test_edge_ranges_from_the_command_line_and_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    assert main(["generate", "--db", str(db), "--users", "60", "--events-per-user", "5", "--quiet",
                 "--calls-per-user", "2:3", "--app-uses-per-user", "1:"]) == 0
    capsys.readouterr()
    from storage.event_store import EventStore

    with EventStore(db) as store:
        per_user: dict[tuple[str, str], int] = {}
        for e in store.read(types=["call", "app.usage"]):
            per_user[(e.type, e.user_id)] = per_user.get((e.type, e.user_id), 0) + 1
    users = [f"U{i:07d}" for i in range(60)]
    assert all(2 <= per_user.get(("call", u), 0) <= 3 for u in users)
    assert all(per_user.get(("app.usage", u), 0) >= 1 for u in users)

    env = {**__import__("os").environ, "UPS_ORDERS_PER_USER": "1:4"}
    cfg = json.loads(run("config", "--db", str(db), env=env).stdout)
    assert cfg["orders_per_user"] == {"min": 1, "max": 4} and cfg["calls_per_user"] == {"min": 0, "max": None}
    for bad, message in (("5:2", "orders_per_user: min (5) must be <= max (2)"),
                         ("two", "'two' is not a range such as 2:10")):
        r = run("config", env={**env, "UPS_ORDERS_PER_USER": bad})
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("generate", "--db", str(tmp_path / "x.db"), "--calls-per-user", "3:1")
    assert r.returncode == 2 and "calls_per_user: min (3) must be <= max (1)" in r.stderr
