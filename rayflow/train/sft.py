"""Supervised fine-tuning on `{prompt, response}` rows, on the shared Ray Train + DeepSpeed loop.

Both preference methods start from SFT models (DPO's reference, WSPO's weak and strong references), so SFT is a
first-class job: `jobs/train_sft.py`. The loss is the mean negative log-likelihood of response tokens (prompt and
padding masked), averaged over the tokens of each micro-batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from rayflow.config import Config
from rayflow.llm import EngineConfig, load_tokenizer, resolve_model_path
from rayflow.runinfo import write_json
from rayflow.train.lm_task import CausalLMTask
from rayflow.train.logprobs import collate, token_logps
from rayflow.train.loop import FitResult, TrainLoopConfig, fit
from rayflow.train.preference_data import DataConfig, load_splits, write_errors


class SFTConfig(Config):
    """Supervised fine-tuning job."""

    model: str = Field("tiny:tiny", description="local path, hub id or tiny:<size>")
    output_dir: str = Field("outputs/sft", description="model/, errors/, history.jsonl, stats.json, run.json")
    data: DataConfig = DataConfig(train="examples/preference/sft.jsonl")
    train: TrainLoopConfig = TrainLoopConfig()


class SFTTask(CausalLMTask):
    """Response-token NLL; metrics: per-example mean NLL and token counts."""

    def make_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate([(r["prompt_ids"], r["response_ids"]) for r in rows], self.pad_id)

    def compute_loss(self, model, batch):
        logps = token_logps(model, batch)
        n = batch["loss_mask"].sum(-1)
        loss = -logps.sum() / n.sum().clamp(min=1)
        return loss, {"nll": -logps.sum(-1).detach() / n.clamp(min=1), "num_tokens": n.float()}


def run_sft(cfg: SFTConfig, *, name: str = "sft") -> dict[str, Any]:
    """Train, export to `output_dir/model`, and write history.jsonl, stats.json and errors/; returns the stats."""
    out = Path(cfg.output_dir).resolve()
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(EngineConfig(model=model_path))
    train, held, errors, stats = load_splits(cfg.data, "response", tokenizer)
    write_errors(errors, out)
    rows = [{"prompt_ids": e.prompt_ids, "response_ids": e.chosen_ids} for e in train]
    eval_rows = [{"prompt_ids": e.prompt_ids, "response_ids": e.chosen_ids} for e in held]
    task = SFTTask(model_path, tokenizer.pad_token_id, rows, eval_rows, seed=cfg.train.seed)
    result = fit(task, cfg.train, storage_path=out / "ray", name=name, export_dir=out / "model")
    return finish(out, result, stats)


def finish(out: Path, result: FitResult, stats: dict[str, Any]) -> dict[str, Any]:
    """Write a training job's history.jsonl and stats.json (data counts + final metrics)."""
    with open(out / "history.jsonl", "w") as fh:
        fh.writelines(json.dumps(h) + "\n" for h in result.history)
    stats = {
        **stats,
        "final_metrics": result.metrics,
        "model_dir": result.export_path,
        "checkpoint": result.checkpoint_path,
    }
    write_json(out / "stats.json", stats)
    return stats
