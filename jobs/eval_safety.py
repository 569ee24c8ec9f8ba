"""Label-level safety-judge evaluation: labelled JSONL -> judge (engine or service) -> metrics + report.

    python jobs/eval_safety.py --config configs/eval_safety.yaml scheme=shieldlm output_dir=/abs/out
    python jobs/eval_safety.py --config configs/eval_safety.yaml endpoint=http://127.0.0.1:8000
    ray job submit --working-dir . -- python jobs/eval_safety.py --config configs/eval_safety.yaml output_dir=/abs/out

Writes judgements.parquet, errors/, metrics.json, report.md, confusion.png, summary.json and run.json.
"""

from __future__ import annotations

from rayflow.eval.safety.label_eval import EvalSafetyConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(EvalSafetyConfig, run, check=check, description=__doc__)
