#!/usr/bin/env bash
# The CUDA check: the gpu-marked tests, then the CUDA benchmarks, then one table. For a machine with
# one NVIDIA GPU, torch + torch_geometric installed and no network; its steps are capped at 575 s in all
# (a step past its cap is reported and the next one runs), well within a 600 s command limit.
#
#   bash bench/gpu_check.sh fetch   # once, where pip reaches PyPI: the wheels the GPU machine lacks
#                                   # (Python 3.12, x86-64) into wheelhouse/ (~14 MB, git-ignored)
#   bash bench/gpu_check.sh         # on the GPU machine, in the repo root, wheelhouse/ beside it
#
# Environment: PYTHON (default python3), OUT (where logs and figures go; default /tmp/ups-gpu-check),
# SIZES (forward benchmark user counts, default 100000,1000000), REFRESH_USERS (default 100000),
# DEVICE=cpu for a dry run of every step on a machine without a GPU (the gpu tests then skip).
# Step failures are reported in the table and the script goes on; it exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(bytewax==0.21.1 pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 typing-inspection==0.4.5
        annotated-types==0.8.0 typing_extensions==4.16.0 python-dotenv==1.2.4 Faker==40.63.0 tzdata==2026.6
        sqlite-utils==4.2.1 sqlite-fts4==1.0.3 click-default-group==1.2.4 pymetis==2025.2.2)

if [ "${1:-}" = fetch ]; then
    platforms=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    mkdir -p wheelhouse
    exec "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d wheelhouse "${WHEELS[@]}"
fi

PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/ups-gpu-check}
SIZES=${SIZES:-100000,1000000}
REFRESH_USERS=${REFRESH_USERS:-100000}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
SITE=/tmp/ups-site
DEVICE=${DEVICE:-gpu}
export PYTHONUNBUFFERED=1 UPS_DEVICE=$DEVICE CHECK_DEVICE=$DEVICE

say() { echo "== $(date +%H:%M:%S) $*" | tee -a "$LOG"; }
STATUS=()
step() {  # step NAME TIMEOUT_S COMMAND...: run, log, remember how it ended
    local name=$1 limit=$2; shift 2
    say "$name"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    STATUS+=("$name|$rc|$((SECONDS - t0))")
    say "$name: exit $rc after $((SECONDS - t0)) s"
}

say "machine"
nvidia-smi -L 2>&1 | tee -a "$LOG"
if [ -d wheelhouse ] && ls wheelhouse/*.whl >/dev/null 2>&1; then
    rm -rf "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" wheelhouse/*.whl 2>&1 | tail -3 | tee -a "$LOG"
    export PYTHONPATH="$PWD:$SITE"
else
    say "no wheelhouse/: using the packages installed here"
    export PYTHONPATH="$PWD"
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG" || { say "torch cannot use CUDA here: stopping"; exit 2; }
import sys, torch, torch_geometric, pydantic, bytewax, faker, sqlite_utils, pymetis  # noqa: F401 - all must import
import os
gpu = os.environ["CHECK_DEVICE"] == "gpu"
assert torch.cuda.is_available() or not gpu, "torch sees no CUDA device"
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"PyG {torch_geometric.__version__}, {torch.cuda.get_device_name(0) if gpu else 'cpu dry run'}")
EOF

step "gpu-marked tests" 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu -o addopts="" \
    tests/test_graph.py tests/test_graph_build.py tests/test_sampler.py tests/test_refresh.py tests/test_hgt.py
step "graph build ($DEVICE)" 60 "$PY" -m bench.graph_build --users 20000 --json "$OUT/graph_build.json"
step "embedding write" 45 "$PY" -m bench.embedding_write --rows 300000 --json "$OUT/embedding_write.json"
step "forward vs bare aggregation ($DEVICE)" 170 "$PY" -m bench.embeddings --sizes "$SIZES" --skip train,refresh \
    --json "$OUT/forward.json"
step "refresh ($DEVICE)" 75 "$PY" -m bench.embeddings --skip forward,train --refresh-users "$REFRESH_USERS" \
    --stream-seconds 0 --json "$OUT/refresh_cuda.json" --profile-refresh "$OUT/refresh_profile.txt"
UPS_DEVICE=cpu step "refresh (cpu)" 75 "$PY" -m bench.embeddings --skip forward,train --refresh-users "$REFRESH_USERS" \
    --stream-seconds 0 --json "$OUT/refresh_cpu.json"

STEPS=$(printf '%s\n' "${STATUS[@]}")
export STEPS OUT
"$PY" - <<'EOF' 2>&1 | tee "$OUT/table.txt" | tee -a "$LOG"
import json, os
from pathlib import Path

out = Path(os.environ["OUT"])

def load(name):
    p = out / name
    return json.loads(p.read_text()) if p.exists() else None

rows = []
for line in os.environ["STEPS"].splitlines():
    name, rc, secs = line.split("|")
    rows.append((name, "ok" if rc == "0" else f"FAILED (exit {rc}{', timed out' if rc in ('124', '137') else ''})", f"{secs} s", ""))
g = load("graph_build.json")
if g:
    rows.append((f"graph build, interactions/s ({g.get('device', '?')})", f"{g['interactions_per_s'] / 1e6:.2f}M/s", f"{g['build_s']:.2f} s",
                 f"per-event builder {g['per_event_interactions_per_s'] / 1e6:.2f}M/s ({g['per_event_s']:.2f} s); target >= 2M/s"))
w = load("embedding_write.json")
if w:
    for k in ("insert", "update"):
        rows.append((f"embedding write ({k}), rows/s", f"{w[f'ups_{k}_rows_per_s']:,.0f}", "",
                     f"raw executemany {w[f'raw_{k}_rows_per_s']:,.0f}; target >= 300,000"))
f = load("forward.json")
for r in (f or {}).get("forward", []):
    x = r["forward_s"] / r["bare_aggregation_s"]
    rows.append((f"full forward at {r['users']:,} users ({f.get('device', '?')})", f"{r['forward_s']:.3f} s", f"x{x:.1f} bare",
                 f"bare 2-layer sum-aggregation {r['bare_aggregation_s']:.3f} s; target <= x10"))
rc, rp = load("refresh_cuda.json"), load("refresh_cpu.json")
if rc:
    r = rc["refresh"]
    rows.append((f"refresher full pass vs direct forward ({r['device']})", f"{r['full_forward_s']:.2f} s",
                 f"x{r['full_forward_s'] / r['direct_forward_s']:.2f}", f"direct {r['direct_forward_s']:.2f} s; target <= x2"))
if rc and rp:
    c, p = rc["refresh"]["one_event_refresh_s"], rp["refresh"]["one_event_refresh_s"]
    rows.append((f"one event's nodes refreshed, {rc['refresh']['device']} vs cpu", f"{1000 * c:.1f} ms", f"cpu {1000 * p:.1f} ms",
                 f"cuda/cpu x{c / p:.2f}; target <= x1"))
if rp:
    r = rp["refresh"]
    rows.append((f"refresher full pass vs direct forward ({r['device']})", f"{r['full_forward_s']:.2f} s",
                 f"x{r['full_forward_s'] / r['direct_forward_s']:.2f}", f"direct {r['direct_forward_s']:.2f} s"))
widths = [max(len(r[i]) for r in rows) for i in range(4)]
print("\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
EOF
for s in "${STATUS[@]}"; do
    [ "$(echo "$s" | cut -d'|' -f2)" = 0 ] || exit 1
done
