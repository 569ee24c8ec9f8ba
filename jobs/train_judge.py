"""Train a Safety-J-style judge by iterative critique preference learning: sample k critiques per item,
score them by label correctness and AIU meta-evaluation F1, pair best with worst, train with DPO (Ray Train
+ DeepSpeed), keep the checkpoint with the best validation meta-eval F1, repeat for R rounds.

    python jobs/train_judge.py --config configs/train_judge.yaml output_dir=/abs/out rounds=3
    ray job submit --working-dir . -- python jobs/train_judge.py --config configs/train_judge.yaml output_dir=/shared/j

Writes sft/ (warm start), round_<r>/ (samples.jsonl, pairs.jsonl, model/), best/ (HF format), history.json,
errors/ and run.json to output_dir. Serve the result: serve/config.yaml with llm.engine.model=<output_dir>/best.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from rayflow.config import parse_cli
from rayflow.train.judge import TrainJudgeConfig, run_train_judge
from rayflow.runinfo import RunRecord


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(TrainJudgeConfig, argv, description=__doc__)
    ray.init()
    with RunRecord(cfg.output_dir, cfg, job="train_judge") as run:
        with run.phase("rounds"):
            result = run_train_judge(cfg)
        run.set("best", result["best"])
        run.set("rounds", [{k: v for k, v in r.items() if k != "model"} for r in result["rounds"]])
    best = result["best"]
    print(f"best judge: {best['source']} (val meta-F1 {best['val']['meta_f1_macro']:.3f}, label accuracy "
          f"{best['val']['label_accuracy']:.3f}) -> {Path(best['model_dir'])}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
