"""OmniBal training of the tiny VLM on Ray Train + DeepSpeed: planning on the driver, two execution modes.

The workflow (``jobs/train_vlm.py``) is :func:`check` + :func:`run`. :func:`plan_run` (pure, driver side) does
the balancing work once: it indexes the data, searches the ISF budgets, builds epoch 0's schedule and its
metrics, and in pipeline mode chooses stage boundaries (``parameters`` / ``uniform`` / ``searched`` with the
cost profile) and each stage's recompute plan.

:func:`train_vlm` then trains through rayflow's one driver (:func:`rayflow.train.loop.fit`), with
:class:`OmniBalTask` feeding each data-parallel replica its scheduled groups (one group per micro-batch,
``train.grad_accum_steps`` groups per optimizer step), in one of two strategies:

- ``mode="zero"``: data-parallel DeepSpeed ZeRO (``ZeroStrategy``);
- ``mode="pipeline"``: DeepSpeed's pipeline engine (1F1B, gloo on CPU, ``PipelineStrategy``) over
  ``pipeline_stages`` stages with the planned boundaries and per-stage recompute, ``train.num_workers /
  pipeline_stages`` replicas.

Both get the driver's evaluation (on ``data.eval_samples`` held-out samples), checkpoints, resume with the
restart count, TensorBoard curves and HF export.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from rayflow.config import Config
from rayflow.runinfo import write_json
from rayflow.train.loop import (
    FitResult,
    LazyBatches,
    PipelineStrategy,
    PipelineTask,
    TrainLoopConfig,
    ZeroStrategy,
    eval_shard,
    fit,
)
from rayflow.train.omnibal.costmodel import CostProfile
from rayflow.train.omnibal.index import LengthIndex, read_jsonl_index
from rayflow.train.omnibal.partition import (
    MemorySpec,
    evaluate_partition,
    parameters_partition,
    search_partition,
    uniform_partition,
)
from rayflow.train.omnibal.qsearch import search_q, search_q_by_source, search_q_linear
from rayflow.train.omnibal.schedule import (
    BalanceConfig,
    EpochSchedule,
    GroupWork,
    RankIterator,
    build_schedule,
)
from rayflow.train.omnibal.synthetic import image_text_samples
from rayflow.train.omnibal.tiny_vlm import TinyVLMConfig, layer_kinds
from rayflow.train.omnibal.vlm_data import VLMData
from rayflow.workflow import Result, Workflow, require_model, require_path

__all__ = [
    "DEFAULT_PROFILE",
    "OmniBalTask",
    "RunPlan",
    "TrainVLMConfig",
    "check",
    "load_samples",
    "plan_run",
    "run",
    "train_vlm",
]

DEFAULT_PROFILE = Path(__file__).with_name("profiles") / "cpu_tiny.json"
log = logging.getLogger(__name__)


class VLMSettings(Config):
    """Tiny VLM shape (see :class:`~rayflow.train.omnibal.tiny_vlm.TinyVLMConfig`)."""

    image_size: int = Field(16, ge=4, description="image side in pixels")
    patch_size: int = Field(4, ge=1, description="ViT patch side in pixels")
    vit_hidden: int = Field(64, description="ViT width")
    vit_layers: int = Field(4, ge=1, description="ViT blocks")
    vit_heads: int = Field(2, description="ViT attention heads")
    hidden_size: int = Field(128, description="decoder width")
    intermediate_size: int = Field(256, description="decoder MLP width")
    llm_layers: int = Field(4, ge=1, description="decoder blocks")
    llm_heads: int = Field(2, description="decoder attention heads")


class VLMDataSettings(Config):
    """Training data: a JSONL file in rayflow's image-text format, or synthetic samples when ``path`` is null."""

    path: str | None = Field(None, description="JSONL {id, images, text}; null = synthetic")
    synthetic_samples: int = Field(192, ge=1, description="training samples when path is null")
    synthetic_skew: float = Field(3.0, ge=0, description="heavy-tail strength of synthetic lengths")
    max_images: int = Field(4, ge=0, description="most images per synthetic sample")
    max_tokens: int = Field(1024, ge=8, description="samples longer than this are error records")
    eval_path: str | None = Field(None, description="held-out JSONL; null = eval_samples synthetic ones")
    eval_samples: int = Field(0, ge=0, description="synthetic held-out samples (0 = no evaluation)")
    seed: int = Field(0, description="synthetic data seed (held-out samples use seed + 1)")


class TrainVLMConfig(Config):
    """OmniBal VLM training job."""

    output_dir: str = Field(
        "outputs/train_vlm", description="run.json, summary.json, plan.json, errors.jsonl, hf/ export"
    )
    tokenizer: str = Field("tiny:tiny", description="tokenizer dir or tiny:<size>")
    data: VLMDataSettings = VLMDataSettings()
    model: VLMSettings = VLMSettings()
    mode: Literal["zero", "pipeline"] = Field(
        "pipeline", description="zero: data parallel; pipeline: DeepSpeed PP"
    )
    pipeline_stages: int = Field(2, ge=1, description="pipeline mode: stages per data-parallel replica")
    balance: BalanceConfig = BalanceConfig()
    search_q: bool = Field(True, description="search ISF budgets instead of using balance.isf.q_v/q_t")
    q_search: Literal["grid", "linear"] = Field(
        "grid", description="grid: rayflow's 2-D search on step cost; linear: the reference's 1-D search"
    )
    samples_per_group: int = Field(4, ge=1, description="Q search target: samples per packed group")
    partition: Literal["parameters", "uniform", "searched"] = Field(
        "searched",
        description="stage boundaries: by parameters, uniform layers, or searched with the profile",
    )
    recompute: Literal["plan", "none", "full"] = Field(
        "plan", description="plan: per stage; none/full: global"
    )
    profile: str | None = Field(None, description="cost profile JSON; null = the committed CPU profile")
    memory_budget_mb: float = Field(
        512.0, gt=0, description="per-device memory the recompute planner fits into"
    )
    train: TrainLoopConfig = TrainLoopConfig(
        micro_batch_size=1,
        grad_accum_steps=4,
        lr=1e-3,
        zero_stage=0,
        lr_schedule="constant",
        warmup_ratio=0.0,
        cpus_per_worker=1.0,
    )

    @model_validator(mode="after")
    def _check(self) -> TrainVLMConfig:
        if self.train.micro_batch_size != 1:
            raise ValueError(
                "train.micro_batch_size must be 1: a micro-batch is one balanced group "
                "(its size is set by balance.isf or balance.batch_size)"
            )
        if self.mode == "pipeline":
            if self.train.num_workers % self.pipeline_stages:
                raise ValueError(
                    f"train.num_workers={self.train.num_workers} is not a multiple of "
                    f"pipeline_stages={self.pipeline_stages}"
                )
            if self.train.zero_stage > 1:
                raise ValueError("DeepSpeed's pipeline engine supports train.zero_stage 0 or 1 only")
            if self.train.lora is not None or self.train.gradient_checkpointing:
                raise ValueError(
                    "pipeline mode has its own per-stage recompute; unset train.lora and "
                    "train.gradient_checkpointing"
                )
        return self

    def vlm_config(self, tokenizer) -> TinyVLMConfig:
        return TinyVLMConfig(
            vocab_size=len(tokenizer) + 1,
            image_token_id=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            **self.model.model_dump(),
        )

    @property
    def data_parallel(self) -> int:
        return self.train.num_workers // (self.pipeline_stages if self.mode == "pipeline" else 1)


@dataclass(frozen=True)
class RunPlan:
    """What the driver decided; shipped to every worker."""

    balance: BalanceConfig
    profile: CostProfile  # its group cost orders the schedule, so every rank must use the same one
    parts: tuple[int, ...] | None
    modes: tuple[str, ...] | None
    report: dict


def load_samples(
    cfg: TrainVLMConfig, tokenizer, vlm: TinyVLMConfig
) -> tuple[LengthIndex, list[dict], list[dict]]:
    """(index, samples, error records) for the configured data."""
    if cfg.data.path is not None:
        return read_jsonl_index(cfg.data.path, VLMData.format(tokenizer, vlm), max_tokens=cfg.data.max_tokens)
    samples = image_text_samples(
        cfg.data.synthetic_samples,
        seed=cfg.data.seed,
        max_images=cfg.data.max_images,
        skew=cfg.data.synthetic_skew,
    )
    return VLMData(samples, tokenizer, vlm).index(), samples, []


def load_eval_samples(cfg: TrainVLMConfig, tokenizer, vlm: TinyVLMConfig) -> tuple[list[dict], list[dict]]:
    """(held-out samples, their error records): ``data.eval_path``, else ``data.eval_samples`` synthetic ones
    drawn with another seed than the training samples."""
    if cfg.data.eval_path is not None:
        _, samples, errors = read_jsonl_index(
            cfg.data.eval_path, VLMData.format(tokenizer, vlm), max_tokens=cfg.data.max_tokens
        )
        return samples, errors
    samples = image_text_samples(
        cfg.data.eval_samples,
        seed=cfg.data.seed + 1,
        max_images=cfg.data.max_images,
        skew=cfg.data.synthetic_skew,
    )
    return samples, []


def plan_run(cfg: TrainVLMConfig, index: LengthIndex, vlm: TinyVLMConfig) -> RunPlan:
    """Choose ISF budgets, build epoch 0's schedule, and (pipeline mode) stage boundaries and recompute."""
    micro = cfg.train.grad_accum_steps
    balance, report = cfg.balance, {}
    profile = CostProfile.from_json(cfg.profile or DEFAULT_PROFILE)
    if profile.layers != layer_kinds(vlm):
        raise ValueError(
            f"cost profile {cfg.profile or DEFAULT_PROFILE} describes {len(profile.layers)} layers "
            f"that do not match this model's {len(layer_kinds(vlm))}; fit one with "
            "`python -m rayflow.train.omnibal.profiler` for these model settings"
        )
    cost = profile.group_seconds
    if balance.balance == "isf" and cfg.search_q:
        balance, report["q_search"] = _search_budgets(cfg, index, cost)
    schedule = build_schedule(
        index.vit,
        index.tok,
        balance,
        ranks=cfg.data_parallel,
        micro_per_step=micro,
        epoch=0,
        cost=cost,
        source=index.source,
    )
    report["balance"] = schedule.report(index.tok, cost)
    if cfg.mode != "pipeline":
        return RunPlan(balance, profile, None, None, report)

    stages = cfg.pipeline_stages
    workloads = [
        schedule.work.take(schedule.assignment[t, r])
        for t in range(min(4, schedule.num_steps))
        for r in range(schedule.ranks)
    ]
    memory = MemorySpec(budget=cfg.memory_budget_mb * 2**20, bound=_largest_group(schedule))
    if cfg.partition == "searched":
        result = search_partition(profile, stages, workloads, memory)
        parts = result.best.parts
        report["partition_search"] = {
            "method": result.method,
            "evaluated": result.evaluated,
            "seconds": result.seconds,
            "anchor": list(result.anchor),
        }
    elif cfg.partition == "parameters":
        parts = parameters_partition(profile, stages)
    else:
        parts = uniform_partition(len(profile.layers), stages)
    ev = evaluate_partition(profile, parts, workloads, memory, cfg.recompute)
    modes = tuple(m for plan in ev.plans for m in plan.modes)
    report["pipeline"] = {
        "partition": cfg.partition,
        "parts": list(parts),
        "simulated_step_seconds": ev.step_seconds,
        "simulated_bubble": ev.bubble,
        "fits_memory": ev.feasible,
        "stage_peak_mb": [p.peak_bytes / 2**20 for p in ev.plans],
        "stage_recompute": [list(p.modes) for p in ev.plans],
    }
    return RunPlan(balance, profile, tuple(parts), modes, report)


def _search_budgets(cfg: TrainVLMConfig, index: LengthIndex, cost) -> tuple[BalanceConfig, dict]:
    """The balance settings with searched ISF budgets (per source under ``multi_group``), and what was found."""
    balance = cfg.balance
    iterations = balance.isf.iterations
    if cfg.q_search == "linear":
        # The reference starts at Q_t = 4096, sized for InternVL; start from the target group size instead.
        start = max(16, int(cfg.samples_per_group * index.tok.mean()))
        kwargs = {"ranks": cfg.data_parallel, "samples_per_group": cfg.samples_per_group, "q_t_start": start}
    else:
        kwargs = {
            "ranks": cfg.data_parallel,
            "micro_per_step": cfg.train.grad_accum_steps,
            "samples_per_group": cfg.samples_per_group,
            "objective": "cost",
            "cost": cost,
        }
    kwargs.update(iterations=iterations, seed=balance.seed)
    linear = cfg.q_search == "linear"
    if balance.multi_group:
        found = search_q_by_source(index.vit, index.tok, index.source, linear=linear, **kwargs)
        balance = balance.model_copy(update={"isf_by_source": found})
        return balance, {"method": cfg.q_search, "by_source": {k: v.model_dump() for k, v in found.items()}}
    result = (search_q_linear if linear else search_q)(index.vit, index.tok, **kwargs)
    isf = result.isf.model_copy(update={"iterations": iterations})
    balance = balance.model_copy(update={"isf": isf})
    return balance, {"method": cfg.q_search, "q_v": isf.q_v, "q_t": isf.q_t, "candidates": len(result.table)}


def _largest_group(schedule: EpochSchedule) -> GroupWork:
    """A bound on any group of the epoch (field-wise maximum): what each in-flight micro-batch is sized for."""
    w = schedule.work
    return GroupWork(*(np.array([a.max()]) for a in (w.tiles, w.tokens, w.run_tokens, w.sq_tokens)))


class OmniBalTask(PipelineTask):
    """The tiny VLM on balanced groups, for both strategies (a `PipelineTask` is also a plain `TrainTask`).

    Held-out samples are evaluated in consecutive groups of ``samples_per_group``, dealt out to the replicas.
    """

    def __init__(
        self,
        cfg: TrainVLMConfig,
        plan: RunPlan,
        samples: list[dict],
        tokenizer_dir: str,
        eval_samples: list[dict] = (),
    ) -> None:
        self.cfg, self.plan, self.samples, self.tokenizer_dir = cfg, plan, samples, tokenizer_dir
        self.eval_samples = list(eval_samples)
        self._data: tuple[VLMData, VLMData] | None = None

    def _load(self) -> tuple[VLMData, VLMData]:
        if self._data is None:
            from rayflow.llm import EngineConfig, load_tokenizer

            tokenizer = load_tokenizer(EngineConfig(model=self.tokenizer_dir))
            vlm = self.cfg.vlm_config(tokenizer)
            self._data = VLMData(self.samples, tokenizer, vlm), VLMData(self.eval_samples, tokenizer, vlm)
        return self._data

    def build_model(self) -> torch.nn.Module:
        from rayflow.train.omnibal.tiny_vlm import TinyVLM

        return TinyVLM(self._load()[0].cfg)

    def build_pipeline(self, stages: int, data_parallel: int) -> torch.nn.Module:
        from rayflow.train.omnibal.pipeline import build_pipeline

        if self.plan.parts is None or len(self.plan.parts) != stages + 1:
            raise ValueError(f"the plan has no partition into {stages} stages")
        return build_pipeline(
            self._load()[0].cfg, self.plan.parts, self.plan.modes, data_parallel=data_parallel
        )

    def train_batches(self, epoch: int, rank: int, world_size: int, micro_batch_size: int) -> LazyBatches:
        data = self._load()[0]
        index = data.index()
        schedule = build_schedule(
            index.vit,
            index.tok,
            self.plan.balance,
            ranks=world_size,
            micro_per_step=self.cfg.train.grad_accum_steps,
            epoch=epoch,
            cost=self.plan.profile.group_seconds,
            source=index.source,
        )
        groups = [g for _, step_groups in RankIterator(schedule, rank) for g in step_groups]
        return LazyBatches(groups, functools.partial(data.collate, packed=schedule.grouping.packed))

    def eval_batches(self, rank: int, world_size: int, micro_batch_size: int) -> LazyBatches:
        data = self._load()[1]
        groups = eval_shard(len(data.samples), rank, world_size, self.cfg.samples_per_group)
        return LazyBatches(groups, functools.partial(data.collate, packed=self.plan.balance.balance == "isf"))

    def compute_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        loss = model(**batch)
        return loss, {"num_tokens": self.num_tokens(batch)}

    def pipeline_batch(self, batch: dict) -> tuple[tuple, torch.Tensor]:
        return (batch["pixels"], batch["input_ids"], batch["seq_ids"], batch["pos_ids"]), batch["labels"]

    def num_tokens(self, batch: dict) -> float:
        return float((batch["labels"] != -100).sum())

    def export_pipeline(self, layer_states: dict[int, dict[str, torch.Tensor]], out: Path) -> None:
        from rayflow.train.omnibal.pipeline import pipeline_state_to_model

        pipeline_state_to_model(self._load()[0].cfg, layer_states).save_pretrained(out)


def train_vlm(
    cfg: TrainVLMConfig,
    plan: RunPlan,
    samples: list[dict],
    tokenizer_dir: str,
    *,
    storage_path: str | os.PathLike,
    name: str,
    export_dir: str | os.PathLike | None = None,
    eval_samples: list[dict] = (),
) -> FitResult:
    """Train on the current Ray cluster in ``cfg.mode`` through the one driver; returns its `FitResult`."""
    strategy = PipelineStrategy(cfg.pipeline_stages) if cfg.mode == "pipeline" else ZeroStrategy()
    return fit(
        OmniBalTask(cfg, plan, samples, tokenizer_dir, eval_samples),
        cfg.train,
        storage_path=storage_path,
        name=name,
        export_dir=export_dir,
        strategy=strategy,
    )


def check(cfg: TrainVLMConfig) -> None:
    """The data files and the tokenizer exist (before Ray starts)."""
    require_path(cfg.data.path, "data.path")
    require_path(cfg.data.eval_path, "data.eval_path")
    require_path(cfg.profile, "profile")
    require_model(cfg.tokenizer, "tokenizer")


def run(cfg: TrainVLMConfig) -> Result:
    """Plan on the driver, then train on the current Ray cluster. Writes plan.json, errors.jsonl, the model in
    hf/, checkpoints and curves under checkpoints/, summary.json and run.json to ``cfg.output_dir``."""
    from rayflow.llm import EngineConfig, load_tokenizer, resolve_model

    with Workflow("train_vlm", cfg, cfg.output_dir) as wf:
        out = wf.output_dir.resolve()
        with wf.phase("plan"):
            tokenizer_dir = resolve_model(cfg.tokenizer)
            tokenizer = load_tokenizer(EngineConfig(model=tokenizer_dir))
            vlm = cfg.vlm_config(tokenizer)
            log.info("indexing the data and searching ISF budgets for %d replicas", cfg.data_parallel)
            index, samples, errors = load_samples(cfg, tokenizer, vlm)
            eval_samples, eval_errors = load_eval_samples(cfg, tokenizer, vlm)
            errors += eval_errors
            (out / "errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))
            if cfg.mode == "pipeline":
                log.info("searching %s stage boundaries and per-stage recompute", cfg.partition)
            plan = plan_run(cfg, index, vlm)
            write_json(out / "plan.json", plan.report)
        with wf.phase("train"):
            log.info("training in %s mode on %d workers", cfg.mode, cfg.train.num_workers)
            result = train_vlm(cfg, plan, samples, tokenizer_dir, storage_path=out / "checkpoints",
                               name="train_vlm", export_dir=out / "hf", eval_samples=eval_samples)  # fmt: skip
        summary = {
            "samples": len(samples),
            "eval_samples": len(eval_samples),
            "errors": len(errors),
            **plan.report,
            **result.outputs(),
        }
        b = plan.report["balance"]
        message = (
            f"trained {cfg.mode} ({cfg.balance.balance}, partition={cfg.partition}): pad {b['pad']:.3f}, "
            f"dist vit/llm {b['dist_vit']:.3f}/{b['dist_llm']:.3f}, max/mean {b['max_mean']:.3f}; "
            f"final loss {result.metrics.get('loss', float('nan')):.4f} -> {out}"
        )
        return wf.finish(summary, message)
