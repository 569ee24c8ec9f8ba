"""OmniBal balanced vision-language training of the tiny VLM on Ray Train + DeepSpeed.

    python jobs/train_vlm.py --config configs/train_vlm.yaml output_dir=/abs/out
    python jobs/train_vlm.py --config configs/train_vlm.yaml balance.balance=random partition=parameters
    ray job submit --working-dir . -- python jobs/train_vlm.py --config configs/train_vlm.yaml output_dir=/shared/x

Plans on the driver (length index, ISF budget search, schedule metrics, stage partition search and
per-stage recompute plan), then trains in `mode` (pipeline: DeepSpeed pipeline engine with the planned
stages; zero: data-parallel ZeRO on rayflow's shared loop). Writes plan.json, stats.json, errors.jsonl,
the HF-format model in hf/, checkpoints under output_dir/checkpoints and run.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from transformers import AutoTokenizer

from rayflow.config import parse_cli
from rayflow.llm import resolve_model
from rayflow.runinfo import RunRecord, write_json
from rayflow.train.omnibal.train import TrainVLMConfig, load_samples, plan_run, train_vlm


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(TrainVLMConfig, argv, description=__doc__)
    out = Path(cfg.output_dir).resolve()
    with RunRecord(out, cfg, job="train_vlm") as run:
        with run.phase("plan"):
            tokenizer_dir = resolve_model(cfg.tokenizer)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            index, samples, errors = load_samples(cfg, tokenizer, cfg.vlm_config(tokenizer))
            (out / "errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))
            plan = plan_run(cfg, index, cfg.vlm_config(tokenizer))
            write_json(out / "plan.json", plan.report)
        ray.init()
        with run.phase("train"):
            result = train_vlm(cfg, plan, samples, tokenizer_dir, storage_path=out / "checkpoints",
                               name="train_vlm", export_dir=out / "hf")
        stats = {"samples": len(samples), "errors": len(errors), **plan.report, "final": result["metrics"]}
        write_json(out / "stats.json", stats)
        run.set("stats", stats)
    b = plan.report["balance"]
    print(f"trained {cfg.mode} ({cfg.balance.balance}, partition={cfg.partition}): pad {b['pad']:.3f}, "
          f"dist vit/llm {b['dist_vit']:.3f}/{b['dist_llm']:.3f}, max/mean {b['max_mean']:.3f}; "
          f"final loss {result['metrics'].get('loss', float('nan')):.4f} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
