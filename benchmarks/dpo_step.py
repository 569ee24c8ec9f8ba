"""DPO training throughput: rayflow (Ray Train + DeepSpeed, one worker) vs TRL's DPOTrainer (single process).

Same tiny model, same preference rows, same batch size, β and learning rate, one CPU thread each, one epoch. Both
report steady-state training tokens/s: every non-padding token of prompt+chosen and prompt+rejected, over the time
of steps 2..N (step 1 carries allocation and warm-up; start-up, reference precompute and saving are excluded).
Both precompute the reference log-probs before training (rayflow through Ray Data, TRL with
`precompute_ref_log_probs=True`), so the timed steps are policy forward/backward/optimizer work on both sides.
Peak memory: rayflow's worker peak RSS (the loop's `perf/peak_mem_mb`) vs the TRL process's peak RSS.

    python benchmarks/dpo_step.py [--rows 1024] [--batch-size 8]

TRL is a benchmark-only dependency: `pip install -c constraints/cpu.txt trl`. Without it this script says so and
exits without writing a result.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]


def make_rows(n: int) -> list[dict]:
    names = ["Umar", "Sam", "Julia", "Mira", "Tom", "Ana", "Leo", "Ivy"]
    places = ["the park", "the bookshop", "the kitchen", "the market", "the river"]
    rows = []
    for i in range(n):
        name, place = names[i % len(names)], places[(i // len(names)) % len(places)]
        fact = f"{name} went to {place} and found a loaf of bread."
        rows.append(
            {
                "prompt": f"Tell me what {name} did at {place}.",
                "chosen": f"Sure. {fact}",
                "rejected": f"No. {fact}",
            }
        )
    return rows


def total_tokens(rows: list[dict], tokenizer) -> int:
    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return sum(2 * n(r["prompt"]) + n(r["chosen"]) + n(r["rejected"]) + 2 for r in rows)  # +EOS per response


def run_rayflow(model: str, data: Path, args, workdir: Path) -> dict:
    import ray

    from rayflow.train.loop import TrainLoopConfig
    from rayflow.train.precompute import PrecomputeConfig
    from rayflow.train.preference import DPOSettings, ReferenceSettings, run_dpo
    from rayflow.train.preference_data import DataConfig

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    train = TrainLoopConfig(
        num_workers=1,
        zero_stage=0,
        micro_batch_size=args.batch_size,
        epochs=1,
        lr=5e-4,
        warmup_ratio=0.0,
        lr_schedule="constant",
        log_every=1,
        ray_reports="with_checkpoints",  # every step is timed in the history; Ray needs only the last
        max_grad_norm=0.0,
    )
    run_dpo(
        model,
        DataConfig(train=str(data), eval_fraction=0.0),
        DPOSettings(beta=0.1),
        ReferenceSettings(),
        train,
        PrecomputeConfig(cache_dir=str(workdir / "cache")),
        workdir / "rf",
    )
    ray.shutdown()
    history = [json.loads(line) for line in (workdir / "rf" / "history.jsonl").read_text().splitlines()]
    seconds = sum(h["num_tokens"] / h["perf/tokens_per_s"] for h in history[1:])
    return {
        "steps": len(history),
        "seconds_steps_2_to_n": seconds,
        "peak_mem_mb": max(h["perf/peak_mem_mb"] for h in history),
    }


def run_trl(model: str, data: Path, args, workdir: Path) -> dict:
    """Runs in a child process (see main) so its peak RSS is TRL's alone."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(1)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    step_s: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_s.append(time.perf_counter() - self.t0)

    tok = AutoTokenizer.from_pretrained(model)
    cfg = DPOConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        learning_rate=5e-4,
        beta=0.1,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_grad_norm=0.0,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_length=256,
        precompute_ref_log_probs=True,
        # TRL's defaults (bf16, gradient checkpointing, fused AdamW) differ from rayflow's CPU run: match them.
        bf16=False,
        gradient_checkpointing=False,
        optim="adamw_torch",
        seed=0,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
        args=cfg,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[StepTimer()],
    )
    trainer.train()
    return {
        "steps": len(step_s),
        "seconds_steps_2_to_n": sum(step_s[1:]),
        "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny:tiny")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--trl-child", metavar="WORKDIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import trl  # noqa: F401
    except ImportError:
        print(
            "dpo_step: skipped: TRL is not installed (benchmark-only dependency: "
            "pip install -c constraints/cpu.txt trl)"
        )
        return

    from transformers import AutoTokenizer

    from rayflow.llm import resolve_model

    model = resolve_model(args.model)
    if args.trl_child:
        workdir = Path(args.trl_child)
        print(json.dumps(run_trl(model, workdir / "pairs.jsonl", args, workdir)))
        return

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        workdir = Path(tmp)
        rows = make_rows(args.rows)
        data = workdir / "pairs.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tokens = total_tokens(rows, AutoTokenizer.from_pretrained(model))
        ours = run_rayflow(model, data, args, workdir)
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--rows",
                str(args.rows),
                "--batch-size",
                str(args.batch_size),
                "--trl-child",
                str(workdir),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        theirs = json.loads(child.stdout.strip().splitlines()[-1])

    def side(label: str, r: dict) -> dict:
        steady_tokens = tokens * (r["steps"] - 1) / r["steps"]
        return {"label": label, "value": steady_tokens / r["seconds_steps_2_to_n"], **r}

    candidate = side("rayflow (Ray Train + DeepSpeed ZeRO-0, 1 worker, precomputed reference)", ours)
    from importlib.metadata import version

    baseline = side("TRL DPOTrainer (1 process, precomputed reference)", theirs)
    baseline["trl_version"] = version("trl")
    candidate["tokens_per_epoch"] = baseline["tokens_per_epoch"] = tokens
    path = write_result("dpo_step", candidate, baseline, unit="training tokens/s", higher_is_better=True)
    print(
        f"rayflow {candidate['value']:.0f} tok/s ({ours['peak_mem_mb']:.0f} MB peak) vs TRL "
        f"{baseline['value']:.0f} tok/s ({theirs['peak_mem_mb']:.0f} MB peak) -> {path}"
    )


if __name__ == "__main__":
    main()
