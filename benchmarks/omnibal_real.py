"""OmniBal data balancing, real: tiny-VLM training throughput on 2 gloo workers, ISF groups vs random batches.

Both runs train the tiny VLM for one epoch of the same heavy-tailed synthetic image-text data with
data-parallel DeepSpeed (ZeRO-1) on rayflow's one training driver, 2 CPU workers, 4 micro-batches per
optimizer step. Baseline: random batches of 4 samples padded to the longest. Candidate: ISF groups of about
4 samples with searched budgets, dealt by cost. Groups hold different amounts of work, so the measure is
samples per second over the epoch (the loop's token throughput over the epoch x samples per labelled
token), not time per step. Start-up is excluded. Run: `python benchmarks/omnibal_real.py [--samples 480]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result


def run(mode: str, samples: int, storage: str) -> dict:
    from transformers import AutoTokenizer

    from rayflow.config import load_config
    from rayflow.llm import resolve_model
    from rayflow.train.omnibal.train import TrainVLMConfig, load_samples, plan_run, train_vlm

    overrides = [f"data.synthetic_samples={samples}", "data.synthetic_skew=3.0", "train.max_steps=null",
                 "train.epochs=1", "train.log_every=100000", f"balance.balance={mode}", "train.zero_stage=1"]
    cfg = load_config(TrainVLMConfig, Path(__file__).resolve().parents[1] / "configs/train_vlm_zero.yaml", overrides)
    tokenizer_dir = resolve_model(cfg.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    index, rows, _ = load_samples(cfg, tokenizer, cfg.vlm_config(tokenizer))
    plan = plan_run(cfg, index, cfg.vlm_config(tokenizer))
    result = train_vlm(cfg, plan, rows, tokenizer_dir, storage_path=storage, name=f"bench-{mode}")
    final = result.metrics
    balance = plan.report["balance"]
    seconds = final["num_tokens"] / final["perf/tokens_per_s"]
    return {"label": mode, "value": balance["samples_used"] / seconds, "epoch_seconds": seconds,
            "steps": balance["steps"], "final_loss": final["loss"],
            **{k: balance[k] for k in ("samples_used", "pad", "dist_vit", "dist_llm", "dist_vit_step",
                                       "dist_llm_step", "max_mean", "mean_samples_per_group", "definitions")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=480)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="omnibal-real-") as storage:
        baseline = run("random", args.samples, storage)
        candidate = run("isf", args.samples, storage)
    ray.shutdown()
    path = write_result("omnibal_real", candidate, baseline, unit="samples/s over an epoch", higher_is_better=True)
    print(f"ISF {candidate['value']:.1f} vs random {baseline['value']:.1f} samples/s "
          f"({candidate['value'] / baseline['value']:.2f}x; pad {baseline['pad']:.2f} -> {candidate['pad']:.2f}, "
          f"max/mean {baseline['max_mean']:.3f} -> {candidate['max_mean']:.3f}) -> {path}")


if __name__ == "__main__":
    main()
