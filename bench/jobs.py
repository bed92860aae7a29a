"""Job overhead: an ``embedding_only`` graph refresh with ``?wait=true`` through the API, first in a cold
job worker (started by that job: imports torch, reads the whole log into a graph — what every job paid
when each ran in a fresh process), then twice in the warm worker it leaves behind. Per run: the time the
client waited, the job's ``wall_s`` (submitted to finished) and ``work_s`` (the task), and the embedding
step's own seconds; wall over work is the overhead (target: at most 1.5 once warm).

    python -m bench.jobs [--users 2000 --db var/bench/jobs.db]

The database is kept (``--db``): a second run skips generation and the initial training.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from litestar.testing import TestClient

from api.app import create_app
from config.settings import Settings


def prepare(db: Path, users: int) -> None:
    """The default dataset and initial model, as ``ups init`` makes them (skipped when the file exists)."""
    if db.exists():
        return
    env = {**os.environ, "UPS_USERS": str(users)}
    subprocess.run([sys.executable, "-m", "ups", "init", "--db", str(db), "--quiet"], env=env, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--db", type=Path, default=Path("var/bench/jobs.db"))
    args = ap.parse_args()
    prepare(args.db, args.users)
    # the in-process client sends Host: testserver.local
    settings = Settings(db=args.db, warm_job_workers=False, explain_workers=0, allowed_hosts=["testserver.local"])
    print(f"{args.db}: embedding_only refresh, ?wait=true (load {os.getloadavg()[0]:.1f})")
    print(f"{'run':<6} {'client s':>9} {'wall_s':>8} {'work_s':>8} {'embed s':>8} {'wall/work':>10}")
    with TestClient(create_app(settings), timeout=3600) as client:
        while client.get("/health").json()["api"]["scoring"] == "loading":
            time.sleep(0.2)
        for run in ("cold", "warm", "warm"):
            t0 = time.perf_counter()
            r = client.post("/api/v1/graph/refresh?wait=true", json={"mode": "embedding_only"})
            waited = time.perf_counter() - t0
            job = r.json()
            if job["state"] != "succeeded":
                raise SystemExit(f"the job did not succeed: {job}")
            res = job["result"]
            print(f"{run:<6} {waited:>9.2f} {res['wall_s']:>8.2f} {res['work_s']:>8.2f} "
                  f"{res['embeddings']['duration_s']:>8.2f} {res['wall_s'] / res['work_s']:>10.2f}")
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
