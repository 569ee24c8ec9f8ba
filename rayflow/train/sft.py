"""Supervised fine-tuning on `{prompt, response}` rows, on the shared Ray Train + DeepSpeed loop.

Both preference methods start from SFT models (DPO's reference, WSPO's weak and strong references), so SFT is a
first-class job: `jobs/train_sft.py`. The loss is the mean negative log-likelihood of response tokens (prompt and
padding masked), averaged over the tokens of each micro-batch.
"""

from __future__ import annotations

import json
import logging
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
from rayflow.workflow import SUMMARY_FILE, Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)


class SFTConfig(Config):
    """Supervised fine-tuning job."""

    model: str = Field("tiny:tiny", description="local path, hub id or tiny:<size>")
    output_dir: str = Field("outputs/sft", description="model/, errors/, history.jsonl, summary.json, run.json")
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
    """Train, export to `output_dir/model`, write history.jsonl and errors/; returns the run's summary (data
    counts, final metrics, model, checkpoint, TensorBoard and curve paths), also written to summary.json."""
    out = Path(cfg.output_dir).resolve()
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(EngineConfig(model=model_path))
    train, held, errors, stats = load_splits(cfg.data, "response", tokenizer)
    write_errors(errors, out)
    rows = [{"prompt_ids": e.prompt_ids, "response_ids": e.chosen_ids} for e in train]
    eval_rows = [{"prompt_ids": e.prompt_ids, "response_ids": e.chosen_ids} for e in held]
    task = SFTTask(model_path, tokenizer.pad_token_id, rows, eval_rows, seed=cfg.train.seed)
    log.info("SFT of %s on %d examples (%d held out)", cfg.model, len(rows), len(eval_rows))
    result = fit(task, cfg.train, storage_path=out / "ray", name=name, export_dir=out / "model")
    return training_summary(out, result, stats)


def training_summary(out: Path, result: FitResult, stats: dict[str, Any]) -> dict[str, Any]:
    """Write a training run's history.jsonl and summary.json to `out`; return the summary: its data counts
    plus `FitResult.outputs()` (a run that is a stage of a bigger workflow keeps its own summary this way)."""
    with open(out / "history.jsonl", "w") as fh:
        fh.writelines(json.dumps(h) + "\n" for h in result.history)
    summary = {**stats, **result.outputs()}
    write_json(out / SUMMARY_FILE, summary)
    return summary


def check(cfg: SFTConfig) -> None:
    """The data files and the model exist (before Ray starts)."""
    require_path(cfg.data.train, "data.train")
    require_path(cfg.data.eval, "data.eval")
    require_model(cfg.model, "model")


def run(cfg: SFTConfig) -> Result:
    """The SFT workflow on the current Ray cluster: `run_sft` plus run.json and summary.json."""
    with Workflow("train_sft", cfg, cfg.output_dir) as wf:
        with wf.phase("train"):
            summary = run_sft(cfg)
        loss = summary["final_metrics"].get("loss", float("nan"))
        return wf.finish(
            summary,
            f"SFT done: {summary['train_examples']} examples ({summary['errors']} rejected), "
            f"final loss {loss:.4f} -> {summary['model_dir']}",
        )
