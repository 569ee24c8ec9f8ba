"""Conflict-detector evaluation (ECon): a conflict set -> NLI / factual-consistency / LLM detectors -> metrics.

    python jobs/eval_conflicts.py --config configs/eval_conflicts.yaml output_dir=/abs/out
    python jobs/eval_conflicts.py input=outputs/make_conflicts/pairs.jsonl
    ray job submit --working-dir . -- python jobs/eval_conflicts.py --config configs/eval_conflicts.yaml output_dir=/abs/out

Writes predictions.parquet, errors/, metrics.json (per-type P/R/F1, accuracy per intensity), report.md,
conflicts.png, summary.json and run.json.
"""

from __future__ import annotations

from rayflow.eval.conflicts.evaluate import EvalConflictsConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(EvalConflictsConfig, run, check=check, description=__doc__)
