"""Batch generation: JSONL prompts -> Ray Data -> engine (vLLM by default) -> Parquet.

    python jobs/generate.py --config configs/generate.yaml output_dir=/abs/out sampling.max_tokens=16
    ray job submit --working-dir . -- python jobs/generate.py --config configs/generate.yaml output_dir=/abs/out

Writes generations/ and errors/ (Parquet), summary.json and run.json to output_dir. When submitted, relative
paths resolve inside the job's uploaded working directory: give output_dir as an absolute or shared path.
"""

from __future__ import annotations

from rayflow.data.generate import GenerateConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(GenerateConfig, run, check=check, description=__doc__)
