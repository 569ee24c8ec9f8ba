"""OmniBal training of the tiny VLM on Ray Train + DeepSpeed: planning on the driver, two execution modes.

:func:`plan_run` (pure, driver side) does the balancing work once: it indexes the data, searches the ISF
budgets, builds epoch 0's schedule and its metrics, and in pipeline mode chooses stage boundaries
(``parameters`` / ``uniform`` / ``searched`` with the cost profile) and each stage's recompute plan.

:func:`train_vlm` then runs one of

- ``mode="zero"``: data-parallel DeepSpeed ZeRO through rayflow's shared loop (:mod:`rayflow.train.loop`),
  with :class:`OmniBalTask` feeding each rank its scheduled groups (one group per micro-batch,
  ``train.grad_accum_steps`` groups per optimizer step);
- ``mode="pipeline"``: DeepSpeed's pipeline engine (1F1B, gloo on CPU) over ``pipeline_stages`` stages with
  the planned boundaries and per-stage recompute, ``train.grad_accum_steps`` groups as the micro-batches of
  each ``train_batch``. Its worker follows the shared loop's conventions (same DeepSpeed config builder,
  LR schedule, checkpoint save -> barrier -> report, resume from ``ray.train.get_checkpoint``, HF export).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from rayflow.config import Config
from rayflow.train.loop import TrainLoopConfig, TrainTask, deepspeed_config, fit, lr_multiplier
from rayflow.train.omnibal.costmodel import CostProfile
from rayflow.train.omnibal.index import LengthIndex, read_jsonl_index
from rayflow.train.omnibal.isf import ISFConfig
from rayflow.train.omnibal.partition import (
    MemorySpec,
    evaluate_partition,
    parameters_partition,
    search_partition,
    uniform_partition,
)
from rayflow.train.omnibal.qsearch import search_q
from rayflow.train.omnibal.schedule import (
    BalanceConfig,
    EpochSchedule,
    GroupWork,
    RankIterator,
    build_schedule,
    check_equal_steps,
)
from rayflow.train.omnibal.synthetic import image_text_samples
from rayflow.train.omnibal.tiny_vlm import TinyVLMConfig, layer_kinds
from rayflow.train.omnibal.vlm_data import VLMData

__all__ = [
    "DEFAULT_PROFILE",
    "OmniBalTask",
    "RunPlan",
    "TrainVLMConfig",
    "load_samples",
    "plan_run",
    "train_vlm",
]

DEFAULT_PROFILE = Path(__file__).with_name("profiles") / "cpu_tiny.json"
_DS_TAG = "state"


class VLMSettings(Config):
    """Tiny VLM shape (see :class:`~rayflow.train.omnibal.tiny_vlm.TinyVLMConfig`)."""

    image_size: int = Field(16, ge=4)
    patch_size: int = Field(4, ge=1)
    vit_hidden: int = 64
    vit_layers: int = Field(4, ge=1)
    vit_heads: int = 2
    hidden_size: int = 128
    intermediate_size: int = 256
    llm_layers: int = Field(4, ge=1)
    llm_heads: int = 2


class VLMDataSettings(Config):
    """Training data: a JSONL file in rayflow's image-text format, or synthetic samples when ``path`` is null."""

    path: str | None = Field(None, description="JSONL {id, images, text}; null = synthetic")
    synthetic_samples: int = Field(192, ge=1)
    synthetic_skew: float = Field(3.0, ge=0, description="heavy-tail strength of synthetic lengths")
    max_images: int = Field(4, ge=0)
    max_tokens: int = Field(1024, ge=8, description="samples longer than this are error records")
    seed: int = 0


class TrainVLMConfig(Config):
    """OmniBal VLM training job."""

    output_dir: str = Field("outputs/train_vlm", description="run.json, stats.json, errors.jsonl, hf/ export")
    tokenizer: str = Field("tiny:tiny", description="tokenizer dir or tiny:<size>")
    data: VLMDataSettings = VLMDataSettings()
    model: VLMSettings = VLMSettings()
    mode: Literal["zero", "pipeline"] = Field(
        "pipeline", description="zero: data parallel; pipeline: DeepSpeed PP"
    )
    pipeline_stages: int = Field(2, ge=1)
    balance: BalanceConfig = BalanceConfig()
    search_q: bool = Field(True, description="search ISF budgets instead of using balance.isf.q_v/q_t")
    samples_per_group: int = Field(4, ge=1, description="Q search target: samples per packed group")
    partition: Literal["parameters", "uniform", "searched"] = "searched"
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
        found = search_q(
            index.vit,
            index.tok,
            ranks=cfg.data_parallel,
            micro_per_step=micro,
            samples_per_group=cfg.samples_per_group,
            objective="cost",
            cost=cost,
            seed=balance.seed,
        )
        isf = ISFConfig(q_v=found.isf.q_v, q_t=found.isf.q_t, iterations=balance.isf.iterations)
        balance = balance.model_copy(update={"isf": isf})
        report["q_search"] = {"q_v": isf.q_v, "q_t": isf.q_t, "candidates": len(found.table)}
    schedule = build_schedule(
        index.vit, index.tok, balance, ranks=cfg.data_parallel, micro_per_step=micro, epoch=0, cost=cost
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


def _largest_group(schedule: EpochSchedule) -> GroupWork:
    """A bound on any group of the epoch (field-wise maximum): what each in-flight micro-batch is sized for."""
    w = schedule.work
    return GroupWork(*(np.array([a.max()]) for a in (w.tiles, w.tokens, w.run_tokens, w.sq_tokens)))


class _Batches:
    """A rank's micro-batches for an epoch, collated on access (a Sequence, as the shared loop expects)."""

    def __init__(self, data: VLMData, groups: list[np.ndarray], packed: bool) -> None:
        self.data, self.groups, self.packed = data, groups, packed

    @classmethod
    def of(cls, data: VLMData, schedule: EpochSchedule, rank: int) -> _Batches:
        groups = [g for _, step_groups in RankIterator(schedule, rank) for g in step_groups]
        return cls(data, groups, schedule.grouping.packed)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int | slice) -> dict[str, torch.Tensor] | _Batches:
        if isinstance(i, slice):
            return _Batches(self.data, self.groups[i], self.packed)
        return self.data.collate(self.groups[i], packed=self.packed)


class OmniBalTask(TrainTask):
    """The tiny VLM on balanced groups, for the shared loop's data-parallel ZeRO mode."""

    def __init__(self, cfg: TrainVLMConfig, plan: RunPlan, samples: list[dict], tokenizer_dir: str) -> None:
        self.cfg, self.plan, self.samples, self.tokenizer_dir = cfg, plan, samples, tokenizer_dir
        self._data: VLMData | None = None

    def _load(self) -> VLMData:
        if self._data is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
            self._data = VLMData(self.samples, tokenizer, self.cfg.vlm_config(tokenizer))
        return self._data

    def build_model(self) -> torch.nn.Module:
        from rayflow.train.omnibal.tiny_vlm import TinyVLM

        return TinyVLM(self._load().cfg)

    def train_batches(self, epoch: int, rank: int, world_size: int, micro_batch_size: int) -> _Batches:
        data = self._load()
        index = data.index()
        schedule = build_schedule(
            index.vit,
            index.tok,
            self.plan.balance,
            ranks=world_size,
            micro_per_step=self.cfg.train.grad_accum_steps,
            epoch=epoch,
            cost=self.plan.profile.group_seconds,
        )
        return _Batches.of(data, schedule, rank)

    def compute_loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        loss = model(**batch)
        return loss, {"num_tokens": (batch["labels"] != -100).sum()}


def train_vlm(
    cfg: TrainVLMConfig,
    plan: RunPlan,
    samples: list[dict],
    tokenizer_dir: str,
    *,
    storage_path: str | os.PathLike,
    name: str,
    export_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train on the current Ray cluster in ``cfg.mode``; returns ``{"metrics", "history", "export_path"}``."""
    if cfg.mode == "zero":
        result = fit(
            OmniBalTask(cfg, plan, samples, tokenizer_dir),
            cfg.train,
            storage_path=storage_path,
            name=name,
            export_dir=export_dir,
        )
        return {"metrics": result.metrics, "history": result.history, "export_path": result.export_path}

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = Path(storage_path).expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    t = cfg.train
    trainer = TorchTrainer(
        _pipeline_worker,
        train_loop_config={"cfg": cfg, "plan": plan, "samples": samples, "tokenizer_dir": tokenizer_dir},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker={"CPU": t.cpus_per_worker}
        ),
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo", timeout_s=t.collective_timeout_s),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"pipeline training run {name!r} failed: {result.error}") from result.error
    history, export_path = [], None
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as local:
            history = [json.loads(x) for x in (Path(local) / "history.jsonl").read_text().splitlines() if x]
            if export_dir is not None and (Path(local) / "hf").is_dir():
                import shutil

                shutil.rmtree(export_dir, ignore_errors=True)
                shutil.copytree(Path(local) / "hf", export_dir)
                export_path = str(Path(export_dir).resolve())
    return {"metrics": dict(result.metrics or {}), "history": history, "export_path": export_path}


def _pipeline_worker(config: dict[str, Any]) -> None:
    """Every Ray Train worker: one pipeline stage of one data-parallel replica."""
    cfg: TrainVLMConfig = config["cfg"]
    plan: RunPlan = config["plan"]
    t = cfg.train
    if not t.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from rayflow.train.omnibal.pipeline import build_pipeline

    rank = ray.train.get_context().get_world_rank()
    if not t.use_gpu:
        torch.set_num_threads(max(1, int(t.cpus_per_worker)))
    deepspeed.init_distributed(dist_backend="nccl" if t.use_gpu else "gloo")
    tokenizer = AutoTokenizer.from_pretrained(config["tokenizer_dir"])
    vlm = cfg.vlm_config(tokenizer)
    data = VLMData(config["samples"], tokenizer, vlm)
    index = data.index()

    torch.manual_seed(t.seed)  # identical initial weights on every replica
    net = build_pipeline(vlm, plan.parts, plan.modes, data_parallel=cfg.data_parallel)
    dp_rank = net._topo.get_coord(dist.get_rank()).data
    schedules = {}

    def schedule_for(epoch: int) -> EpochSchedule:
        if epoch not in schedules:
            schedules.clear()
            schedules[epoch] = build_schedule(
                index.vit,
                index.tok,
                plan.balance,
                ranks=cfg.data_parallel,
                micro_per_step=t.grad_accum_steps,
                epoch=epoch,
                cost=plan.profile.group_seconds,
            )
        return schedules[epoch]

    steps_per_epoch = schedule_for(0).num_steps
    check_equal_steps(steps_per_epoch)
    total = t.max_steps or t.epochs * steps_per_epoch
    ds = deepspeed_config(t, cfg.data_parallel)
    ds["train_batch_size"] = t.grad_accum_steps * cfg.data_parallel
    engine, *_ = deepspeed.initialize(
        model=net,
        model_parameters=[p for p in net.parameters() if p.requires_grad],
        config=ds,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, total, t)),
    )

    step, history = 0, []
    start = ray.train.get_checkpoint()
    if start is not None:
        with start.as_directory() as local:
            engine.load_checkpoint(str(Path(local) / "deepspeed"), tag=_DS_TAG)
            step = json.loads((Path(local) / "trainer_state.json").read_text())["step"]
            history = [json.loads(x) for x in (Path(local) / "history.jsonl").read_text().splitlines() if x]

    def report(metrics: dict[str, Any], *, final: bool) -> None:
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="rayflow-vlm-") as tmp:
            engine.save_checkpoint(str(Path(tmp) / "deepspeed"), tag=_DS_TAG)
            if rank == 0:
                (Path(tmp) / "trainer_state.json").write_text(json.dumps({"step": step}))
                (Path(tmp) / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
            if final:
                _export(engine, vlm, config["tokenizer_dir"], Path(tmp) / "hf", dp_rank)
            dist.barrier()  # every stage's shard is on disk before Ray collects the directories
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    losses, samples, seconds = [], 0, 0.0
    while step < total:
        epoch, at = divmod(step, steps_per_epoch)
        schedule = schedule_for(epoch)
        for s, groups in RankIterator(schedule, dp_rank, start_step=at):
            batches = [data.collate(g, packed=schedule.grouping.packed) for g in groups]
            micro = iter(
                [((b["pixels"], b["input_ids"], b["seq_ids"], b["pos_ids"]), b["labels"]) for b in batches]
            )
            t0 = time.perf_counter()
            losses.append(float(engine.train_batch(data_iter=micro)))
            seconds += time.perf_counter() - t0
            samples += sum(len(g) for g in groups)
            step += 1
            done = step == total
            if done or step % t.log_every == 0 or (t.checkpoint_every and step % t.checkpoint_every == 0):
                metrics = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": float(np.mean(losses)),
                    "lr": engine.get_lr()[0],
                    "perf/samples_per_s": samples / seconds,
                }
                checkpoint = done or (t.checkpoint_every and step % t.checkpoint_every == 0)
                if checkpoint:
                    report(metrics, final=done)
                else:
                    history.append(metrics)
                    ray.train.report(metrics)
                losses, samples, seconds = [], 0, 0.0
            if done:
                break


def _export(engine, vlm: TinyVLMConfig, tokenizer_dir: str, out: Path, dp_rank: int) -> None:
    """Collective: gather every stage's layer weights to rank 0 and save the whole model in HF format there."""
    import torch.distributed as dist

    module = engine.module
    mine = {}
    if dp_rank == 0:  # one replica is enough; the others hold the same weights
        for offset, layer in enumerate(module.forward_funcs):
            mine[module._local_start + offset] = {k: v.detach().cpu() for k, v in layer.state_dict().items()}
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if dist.get_rank() != 0:
        return
    from transformers import AutoTokenizer

    from rayflow.train.omnibal.pipeline import pipeline_state_to_model

    layers = {i: sd for part in gathered for i, sd in part.items()}
    pipeline_state_to_model(vlm, layers).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
