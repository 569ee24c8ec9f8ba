"""Supervised fine-tuning on {prompt, response} rows: Ray Train + DeepSpeed, HF-format export.

    python jobs/train_sft.py --config configs/train_sft.yaml output_dir=/abs/out train.max_steps=20
    ray job submit --working-dir . -- python jobs/train_sft.py --config configs/train_sft.yaml output_dir=/shared/sft

Writes model/ (HF format: transformers and vLLM load it), errors/errors.jsonl (rejected rows with reasons),
history.jsonl (metrics per logged step), stats.json and run.json to output_dir; checkpoints under output_dir/ray/.
Rerunning with the same output_dir resumes from the last checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from rayflow.config import parse_cli
from rayflow.runinfo import RunRecord
from rayflow.train.sft import SFTConfig, run_sft


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(SFTConfig, argv, description=__doc__)
    ray.init()
    with RunRecord(cfg.output_dir, cfg, job="train_sft") as run:
        with run.phase("train"):
            stats = run_sft(cfg)
        run.set("stats", stats)
    final = stats["final_metrics"]
    print(
        f"SFT done: {stats['train_examples']} examples ({stats['errors']} rejected), "
        f"final loss {final.get('loss', float('nan')):.4f} -> {Path(cfg.output_dir).resolve() / 'model'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
