#!/usr/bin/env bash
# `make demo`: run the flagship job through `ray job submit` on a local Ray head, then summarise it.
# Uses the cluster at $RAY_API_SERVER_ADDRESS (default http://127.0.0.1:8265) if one answers; otherwise
# starts a local head on 127.0.0.1 and stops it again at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# The job's `python` comes from the raylet's PATH, so the venv must come first before `ray start`.
export PATH="$root/.venv/bin:$PATH"
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}
address=${RAY_API_SERVER_ADDRESS:-http://127.0.0.1:8265}
out=${RAYFLOW_DEMO_OUT:-$root/outputs/demo}

if ray job list --address "$address" >/dev/null 2>&1; then
  echo "== using the Ray cluster at $address"
else
  echo "== starting a local Ray head on 127.0.0.1"
  ray start --head --node-ip-address=127.0.0.1 --num-cpus=2 --dashboard-host=127.0.0.1 \
    --disable-usage-stats >/dev/null
  trap 'echo "== stopping the local Ray head"; ray stop --force >/dev/null 2>&1 || true' EXIT
fi

id="rayflow-demo-$(date +%s)"
echo "== submitting $id: jobs/generate.py on examples/prompts.jsonl (tiny model, vLLM engine)"
ray job submit --address "$address" --submission-id "$id" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", ".git", "outputs", ".cache", "benchmarks/results"]}' \
  -- python jobs/generate.py --config configs/generate.yaml "output_dir=$out"
status=$(python -c 'import sys; from ray.job_submission import JobSubmissionClient as C
print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)' "$address" "$id")
if [ "$status" != "SUCCEEDED" ]; then
  echo "== job $id ended $status; logs: ray job logs --address $address $id" >&2
  exit 1
fi
python - "$out" <<'PY'
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
out = Path(sys.argv[1])
stats = json.loads((out / "stats.json").read_text())
run = json.loads((out / "run.json").read_text())
rows = pq.read_table(out / "generations").to_pylist()[:3]
print(f"\n== done in {run['wall_s']:.1f}s: {stats['generated']} generated, {stats['errors']} errors")
for r in rows:
    print(f"   {r['id']}: {r['generated_text'][:70]!r}")
print(f"== output: {out}/generations (Parquet), errors/, stats.json, run.json")
PY
