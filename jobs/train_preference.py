"""Preference optimisation on Ray Train + DeepSpeed: the DPO family (sigmoid, cDPO, hinge, IPO, robust) with a
chosen reference policy (own SFT model, a stronger model, posterior = none, likelihood = prompt removed), or the
whole WSPO weak-to-strong pipeline.

    python jobs/train_preference.py --config configs/train_dpo.yaml output_dir=/abs/out dpo.beta=0.05
    python jobs/train_preference.py --config configs/train_wspo.yaml output_dir=/abs/wspo
    ray job submit --working-dir . -- python jobs/train_preference.py --config configs/train_dpo.yaml \\
        output_dir=/shared/dpo

Reference (and weak-model) log-probs are computed first in one Ray Data pass and cached on disk, so training
holds only the policy. Writes model/ (HF format), errors/errors.jsonl, history.jsonl, stats.json and run.json
to output_dir (WSPO also weak_sft/ and weak_aligned/); checkpoints under output_dir/ray/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from rayflow.config import parse_cli
from rayflow.runinfo import RunRecord
from rayflow.train.preference import PreferenceConfig, run_preference


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(PreferenceConfig, argv, description=__doc__)
    ray.init()
    with RunRecord(cfg.output_dir, cfg, job="train_preference") as run:
        with run.phase(cfg.method):
            stats = run_preference(cfg)
        run.set("stats", stats)
    final = stats["final_metrics"]
    shown = {k: round(v, 4) for k, v in final.items() if k.startswith(("eval/", "loss"))}
    print(
        f"{cfg.method} done: {stats['train_examples']} examples ({stats['errors']} rejected); {shown} -> "
        f"{Path(cfg.output_dir).resolve() / 'model'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
