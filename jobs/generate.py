"""Batch generation: JSONL prompts -> Ray Data -> engine (vLLM by default) -> Parquet.

    python jobs/generate.py --config configs/generate.yaml output_dir=/abs/out sampling.max_tokens=16
    ray job submit --working-dir . -- python jobs/generate.py --config configs/generate.yaml output_dir=/abs/out

Writes generations/ and errors/ (Parquet), stats.json and run.json to output_dir. When submitted, relative
paths resolve inside the job's uploaded working directory: give output_dir as an absolute or shared path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from rayflow.config import parse_cli
from rayflow.data.generate import GenerateConfig, run_generate
from rayflow.runinfo import RunRecord, write_json


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(GenerateConfig, argv, description=__doc__)
    ray.init()
    with RunRecord(cfg.output_dir, cfg, job="generate") as run:
        with run.phase("generate"):
            stats = run_generate(cfg)
        run.set("stats", stats)
        write_json(Path(cfg.output_dir) / "stats.json", stats)
    out = Path(cfg.output_dir).resolve()
    print(f"generated {stats['generated']} of {stats['rows_in']} rows ({stats['errors']} errors) -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
