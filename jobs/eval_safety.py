"""Label-level safety-judge evaluation: labelled JSONL -> judge (engine or service) -> metrics + report.

    python jobs/eval_safety.py --config configs/eval_safety.yaml scheme=shieldlm output_dir=/abs/out
    python jobs/eval_safety.py --config configs/eval_safety.yaml endpoint=http://127.0.0.1:8000
    ray job submit --working-dir . -- python jobs/eval_safety.py --config configs/eval_safety.yaml output_dir=/abs/out

Writes judgements.parquet, errors/, metrics.json, report.md, confusion.png, stats.json and run.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from rayflow.config import parse_cli
from rayflow.eval.safety.label_eval import EvalSafetyConfig, run_eval_safety
from rayflow.runinfo import RunRecord, write_json


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(EvalSafetyConfig, argv, description=__doc__)
    ray.init()
    with RunRecord(cfg.output_dir, cfg, job="eval_safety") as run:
        with run.phase("judge"):
            stats = run_eval_safety(cfg)
        run.set("stats", stats)
        write_json(Path(cfg.output_dir) / "stats.json", stats)
    out = Path(cfg.output_dir).resolve()
    print(
        f"judged {stats['judged']} of {stats['rows_in']} rows ({stats['errors']} errors) -> {out}/report.md"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
