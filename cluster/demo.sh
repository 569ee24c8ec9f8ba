#!/usr/bin/env bash
# `make demo`: run the flagship job through `ray job submit` on a local Ray head, then summarise it; then the same
# corpus with the `lm` generator (the shipped tiny refiner), one document's two outputs side by side.
# Uses the cluster at $RAY_API_SERVER_ADDRESS (default http://127.0.0.1:8265) if one answers; otherwise
# starts a local head on 127.0.0.1 and stops it again at the end. RAYFLOW_DEMO_OVERRIDES adds key=value
# settings to the job's command line.
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
echo "== submitting $id: jobs/prox_refine.py on examples/web_corpus.jsonl (ProX refinement, rules generator)"
submit() {
  ray job submit --no-wait --address "$address" --submission-id "$id" --working-dir . \
    --runtime-env-json '{"excludes": [".venv", ".git", "outputs", ".cache", "benchmarks/results"]}' \
    -- python jobs/prox_refine.py --config configs/prox_refine.yaml "output_dir=$out" overwrite=true \
    ${RAYFLOW_DEMO_OVERRIDES:-}
}
# A head that has just started may not have registered its job agent yet ("No available agent to submit
# job"): that refusal creates no job, so the same submission is retried for up to a minute.
for attempt in $(seq 30); do
  if msg=$(submit 2>&1); then break; fi
  if [[ "$msg" != *"No available agent"* || $attempt == 30 ]]; then echo "$msg" >&2; exit 1; fi
  sleep 2
done
# `ray job logs --follow` exits non-zero when the job fails; the status check below reports it, so `set -e`
# must not end the script here.
ray job logs --address "$address" --follow "$id" || true
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
stats = json.loads((out / "summary.json").read_text())
run = json.loads((out / "run.json").read_text())
rows = sorted(pq.read_table(out / "data").to_pylist(), key=lambda r: r["id"])
print(f"\n== done in {run['wall_s']:.1f}s: {stats['documents_in']} documents in, {stats['documents_kept']} kept, "
      f"{stats['errors']} errors; drop reasons {stats['drop_reasons']}")
tokens = f", tokens {stats['token_retention']:.0%}" if stats["token_retention"] is not None else ""
print(f"== retention: words {stats['word_retention']:.0%}{tokens}")
kept = [r for r in rows if r["kept"]]
example = max(kept, key=lambda r: len(r["raw_content"].split("\n")) - len(r["text"].split("\n")))
print(f"== before/after: {example['id']}")
def excerpt(label, text):
    lines = text.split("\n")
    shown = lines if len(lines) <= 12 else lines[:5] + ["..."] + lines[-6:]
    print(f"-- {label} ({len(lines)} lines):")
    for line in shown:
        print(f"   | {line[:90]}")
excerpt("before: raw_content", example["raw_content"])
excerpt("after: text", example["text"])
dropped = [r for r in rows if not r["kept"]][:3]
print("-- dropped: " + "; ".join(f"{r['id']} ({r['doc_program'].splitlines()[0][:60]})" for r in dropped))
print(f"== output: {out}/data (Parquet), errors/, summary.json, run.json")
PY

# The same corpus refined by the `lm` generator: rayflow's tiny refiner (`tiny:refiner`, trained from the rules
# teacher; docs/prox_refiner.md) through vLLM. One document's two outputs are printed side by side.
lm_out="$out-lm"
id="rayflow-demo-lm-$(date +%s)"
echo "== submitting $id: the same corpus with the lm generator (configs/prox_refine_lm.yaml, tiny:refiner)"
ray job submit --address "$address" --submission-id "$id" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", ".git", "outputs", ".cache", "benchmarks/results"]}' \
  -- python jobs/prox_refine.py --config configs/prox_refine_lm.yaml "output_dir=$lm_out" overwrite=true
python - "$out" "$lm_out" <<'PY'
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
rules, lm = ({r["id"]: r for r in pq.read_table(Path(d) / "data").to_pylist()} for d in sys.argv[1:3])
stats = json.loads((Path(sys.argv[2]) / "summary.json").read_text())
print(f"\n== lm: {stats['documents_kept']} of {stats['documents_in']} kept, word retention {stats['word_retention']:.0%}; "
      f"decisions equal to the rules' on {sum(rules[i]['kept'] == lm[i]['kept'] for i in rules)} of {len(rules)} documents")
doc = "web-sourdough" if "web-sourdough" in rules else sorted(rules)[0]
width = 58
def column(row):
    text = row["text"] if row["kept"] else f"(dropped: {row['drop_reason']})"
    return [line[:width] for line in text.split("\n")]
left, right = column(rules[doc]), column(lm[doc])
print(f"== {doc}: rules | lm (tiny:refiner)")
print(f"   {'-- rules ' + '-' * (width - 9)} | {'-- lm ' + '-' * (width - 6)}")
for i in range(max(len(left), len(right))):
    a = left[i] if i < len(left) else ""
    b = right[i] if i < len(right) else ""
    print(f"   {a:<{width}} | {b}")
for name, row in (("rules", rules[doc]), ("lm", lm[doc])):
    program = "; ".join(line.split("  #")[0] for line in row["chunk_program"].splitlines() if line.strip())
    print(f"-- {name} chunk program: {program[:200]}")
print(f"== lm output: {sys.argv[2]}/data (Parquet)")
PY
