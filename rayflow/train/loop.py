"""The one Ray Train + DeepSpeed training loop of rayflow.

Every training job (SFT, the DPO family, WSPO, OmniBal, judge training) plugs a `TrainTask` into `fit`:

    class MyTask(TrainTask):
        def build_model(self): return AutoModelForCausalLM.from_pretrained(self.path)
        def train_batches(self, epoch, rank, world_size, micro_batch_size): ...   # this rank's micro-batches
        def compute_loss(self, model, batch): return loss, {"acc": per_example_acc}

    result = fit(MyTask(...), TrainLoopConfig(num_workers=2, zero_stage=2, max_steps=20),
                 storage_path="/abs/runs", name="my-run")
    result.export_path          # HF-format model directory (transformers and vLLM load it)
    result.history              # one dict per logged step / evaluation, rank-0 view of globally reduced metrics
    result.tensorboard_dir, result.curve_png   # TensorBoard events (rank 0) and the loss/eval-loss curve

`fit` is rayflow's only `TorchTrainer`. How the model is spread over the workers is a `Strategy`:
- `ZeroStrategy` (the default): data parallelism, each worker wrapping the model with DeepSpeed ZeRO 0-3 (optional
  optimizer/parameter offload, bf16 or fp32) from `TrainLoopConfig`;
- `PipelineStrategy(stages)`: DeepSpeed's pipeline engine, `stages` workers per replica and num_workers / stages
  data-parallel replicas, for a `PipelineTask` (OmniBal's VLM).
Both get the same driver loop below: one `_Worker` object per worker holding the run's `TrainState` (step,
total steps, restarts, history).

What the loop owns, so tasks don't:
- a `TorchTrainer` with `num_workers` workers (gloo on CPU, NCCL on GPUs) running the strategy;
- optional LoRA through `peft`, gradient checkpointing, gradient accumulation, warmup + constant/linear/cosine LR;
- evaluation every `eval_every` optimizer steps on the task's held-out batches;
- checkpoints every `checkpoint_every` steps: every rank saves its DeepSpeed shard, then a barrier, then
  `ray.train.report(metrics, checkpoint)` so Ray merges the shards into one checkpoint on `storage_path`;
- recovery: `FailureConfig(max_failures)` restarts the worker group after a worker dies and the loop resumes from
  `ray.train.get_checkpoint()` (model, optimizer, LR schedule, data position, history; the `restarts` metric counts
  resumes). Re-running `fit` with the same
  `storage_path` and `name` resumes a finished-or-crashed run the same way;
- the final export: the full model (ZeRO-3 shards gathered one parameter at a time, LoRA merged; pipeline stages
  gathered to rank 0) saved with `save_pretrained` next to the task's tokenizer, inside the final checkpoint and
  copied to `export_dir`;
- curves: rank 0 writes every report to TensorBoard event files in `<run>/tensorboard`, and `fit` draws
  `<run>/curves.png` (loss and eval loss against the step) from the history at the end.

Checkpoint layout (both strategies): `trainer_state.json`, `history.jsonl`, `deepspeed/` (the engine's state),
and in the final one `hf/` (the export).

Data contract. `train_batches(epoch, rank, world_size, micro_batch_size)` must be deterministic in its arguments and
return the same number of micro-batches on every rank (checked; ranks that disagree would deadlock in the collective
ops). Deterministic per-rank batches, rather than a streaming Ray Data split, are what make resume exact: a resumed run
skips exactly the micro-batches already consumed. A trailing group of fewer than `grad_accum_steps` micro-batches in
an epoch is dropped so every optimizer step sees the same number of examples.

Metric contract. `compute_loss` returns `(loss, metrics)`: `loss` is a scalar to minimise (mean over the micro-batch),
`metrics` maps names to per-example tensors of shape [B] (or scalars, counting as one example). The loop averages
each metric over all examples of all ranks since the last log line; `num_tokens` is summed instead and also yields
`perf/tokens_per_s`. Evaluation metrics get an `eval/` prefix. The loop adds `step`, `epoch`, `lr`, `restarts` and
`perf/peak_mem_mb` (the largest over ranks: torch's peak GPU allocation, or the worker's peak RSS on CPU).

Importing this module does not import Ray or DeepSpeed; `fit` imports Ray, and DeepSpeed is imported inside the
worker function only (a top-level `import deepspeed` in the driver breaks the CPU Train controller, ray#50406).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rayflow.config import Config

_DS_TAG = "state"  # one fixed DeepSpeed tag: every checkpoint directory holds exactly one state
_STATE_FILE = "trainer_state.json"
_HISTORY_FILE = "history.jsonl"
EXPORT_SUBDIR = "hf"
TENSORBOARD_SUBDIR = "tensorboard"
CURVE_FILE = "curves.png"

log = logging.getLogger(__name__)


class LoraSettings(Config):
    """LoRA adapters through `peft`; the export merges them into the base weights."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj"), description="module names to adapt"
    )


class TrainLoopConfig(Config):
    """Distributed training settings shared by every rayflow training job."""

    num_workers: int = Field(2, ge=1, description="data-parallel workers (one process each)")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs per worker (fractions share cores)")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL; otherwise CPU + gloo")
    micro_batch_size: int = Field(4, ge=1, description="examples per worker per forward pass")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    epochs: int = Field(1, ge=1, description="passes over the training data (when max_steps is unset)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs when set")
    lr: float = Field(1e-5, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2)")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("linear", description="decay after warmup")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="fraction of steps with linear warmup from 0")
    max_grad_norm: float = Field(1.0, ge=0, description="0 = no clipping")
    zero_stage: Literal[0, 1, 2, 3] = Field(
        2, description="DeepSpeed ZeRO: 0 plain data parallel, 1 optimizer, 2 +gradients, 3 +parameters sharded"
    )
    offload_optimizer: bool = Field(False, description="ZeRO-Offload of optimizer state to CPU (stage >= 1)")
    offload_params: bool = Field(False, description="parameter offload to CPU (stage 3)")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="training precision (no fp16 on CPU)"
    )
    torch_adam: bool | None = Field(
        None, description="torch AdamW instead of DeepSpeed's fused one; None = on CPU"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (HF models)")
    lora: LoraSettings | None = Field(None, description="set to train LoRA adapters instead of all weights")
    log_every: int = Field(
        1, ge=1, description="optimizer steps between metric lines (history, TensorBoard, Ray report)"
    )
    ray_reports: Literal["every_log", "with_checkpoints"] = Field(
        "every_log",
        description="every_log: each metric line is a Ray report (Tune counts them as iterations); "
        "with_checkpoints: only lines with a checkpoint or an evaluation are (each report is a "
        "cross-worker barrier, ~1 s on 2 CPUs)",
    )
    eval_every: int = Field(0, ge=0, description="optimizer steps between evaluations; 0 = only at the end")
    checkpoint_every: int = Field(
        0, ge=0, description="optimizer steps between checkpoints; 0 = only at the end"
    )
    keep_checkpoints: int = Field(2, ge=1, description="most recent checkpoints kept on storage")
    max_failures: int = Field(
        1, ge=-1, description="worker-group restarts from the last checkpoint; -1 = forever"
    )
    collective_timeout_s: int = Field(
        600, ge=10, description="a rank stuck this long in a collective fails the run"
    )
    seed: int = Field(0, description="initial weights (equal on every rank) and data order")

    @model_validator(mode="after")
    def _check(self) -> TrainLoopConfig:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage >= 1")
        return self


class TrainTask:
    """What a job plugs into `fit`. Subclass it; the instance is pickled to every worker, so keep it light
    (paths and tokenised rows, never a loaded model) and define it in an importable module."""

    tokenizer_dir: str | None = None
    """Directory whose tokenizer files are saved beside the exported model (None: export weights only)."""

    def build_model(self) -> torch.nn.Module:
        """A fresh HF `PreTrainedModel` on CPU; called on every worker (and again on rank 0 for a LoRA/ZeRO-3 export)."""
        raise NotImplementedError

    def train_batches(self, epoch: int, rank: int, world_size: int, micro_batch_size: int) -> Sequence[Any]:
        """This rank's micro-batches for `epoch`, deterministic in the arguments, equally many on every rank."""
        raise NotImplementedError

    def compute_loss(
        self, model: torch.nn.Module, batch: Any
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward one micro-batch: (scalar loss, metrics as per-example [B] tensors or scalars)."""
        raise NotImplementedError

    def eval_batches(self, rank: int, world_size: int, micro_batch_size: int) -> Sequence[Any]:
        """This rank's held-out micro-batches (ranks may differ by at most a few); empty = no evaluation."""
        return []

    def eval_metrics(self, model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Metrics of one held-out micro-batch under `torch.no_grad`; defaults to `compute_loss`'s plus the loss."""
        loss, metrics = self.compute_loss(model, batch)
        return {"loss": loss, **metrics}


@dataclass(frozen=True)
class FitResult:
    """What `fit` returns. `metrics` is the last report; `history` every report in order."""

    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    checkpoint_path: str | None
    export_path: str | None
    run_path: str
    tensorboard_dir: str | None = None
    curve_png: str | None = None

    def outputs(self) -> dict[str, Any]:
        """What a workflow's summary lists about the run: final metrics and where the artefacts are."""
        return {
            "final_metrics": self.metrics,
            "model_dir": self.export_path,
            "checkpoint": self.checkpoint_path,
            "tensorboard_dir": self.tensorboard_dir,
            "curve_png": self.curve_png,
        }


def fit(
    task: TrainTask,
    cfg: TrainLoopConfig,
    *,
    storage_path: str | os.PathLike,
    name: str,
    export_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Any] | None = None,
    strategy: Strategy | None = None,
) -> FitResult:
    """Train `task` on the current Ray cluster; blocks until done and returns a `FitResult`.

    `storage_path` (absolute; shared storage on a multi-node cluster) holds `name/` with the checkpoints. The same
    (`storage_path`, `name`) resumes from the latest checkpoint. The final HF export is copied to `export_dir` when
    given. `callbacks` are Ray Train run-config callbacks, e.g. `TuneReportCallback()` when `fit` runs inside a
    Tune trial. `strategy` defaults to `ZeroStrategy()`. Raises `RuntimeError` with the worker's error when
    training fails beyond `cfg.max_failures`.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = Path(storage_path).expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    tensorboard_dir = storage / name / TENSORBOARD_SUBDIR
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "task": task,
            "cfg": cfg,
            "strategy": strategy or ZeroStrategy(),
            "tensorboard_dir": str(tensorboard_dir),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        torch_config=TorchConfig(
            backend="nccl" if cfg.use_gpu else "gloo", timeout_s=cfg.collective_timeout_s
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            callbacks=list(callbacks or []),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"training run {name!r} failed: {result.error}") from result.error
    history: list[dict[str, Any]] = []
    ckpt_path = export_path = None
    if result.checkpoint is not None:
        ckpt_path = result.checkpoint.path
        with result.checkpoint.as_directory() as local:
            history_file = Path(local) / _HISTORY_FILE
            if history_file.is_file():
                history = [json.loads(line) for line in history_file.read_text().splitlines() if line]
            exported = Path(local) / EXPORT_SUBDIR
            if export_dir is not None and exported.is_dir():
                shutil.rmtree(export_dir, ignore_errors=True)
                shutil.copytree(exported, export_dir)
                export_path = str(Path(export_dir).resolve())
            elif exported.is_dir() and Path(ckpt_path).is_dir():
                export_path = str(Path(ckpt_path) / EXPORT_SUBDIR)
    curve = plot_curves(history, storage / name / CURVE_FILE)
    return FitResult(
        dict(result.metrics or {}),
        history,
        ckpt_path,
        export_path,
        str(result.path),
        str(tensorboard_dir) if tensorboard_dir.is_dir() else None,
        str(curve) if curve else None,
    )


# --- pure helpers (no Ray, no DeepSpeed): tested directly ----------------------------------------------------


def deepspeed_config(cfg: TrainLoopConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config for `cfg` on `world_size` data-parallel ranks."""
    torch_adam = (not cfg.use_gpu) if cfg.torch_adam is None else cfg.torch_adam
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if cfg.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    ds = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum_steps * world_size,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": list(cfg.adam_betas),
                "weight_decay": cfg.weight_decay,
                "torch_adam": torch_adam,
            },
        },
        "zero_optimization": zero,
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": cfg.dtype == "bfloat16"},
        "steps_per_print": 10**9,  # the loop reports metrics itself
        "wall_clock_breakdown": False,
    }
    if cfg.offload_optimizer and torch_adam:
        # DeepSpeed refuses a non-DeepSpeed optimizer under offload unless told the client knows what it is doing.
        ds["zero_force_ds_cpu_optimizer"] = False
    return ds


def lr_multiplier(step: int, total_steps: int, cfg: TrainLoopConfig) -> float:
    """LR factor applied after `step` optimizer steps (0-based): linear warmup, then the configured decay to 0."""
    warmup = round(cfg.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if cfg.lr_schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def shard_indices(
    n: int,
    epoch: int,
    rank: int,
    world_size: int,
    micro_batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
) -> list[list[int]]:
    """Example indices of this rank's micro-batches for `epoch`: a seeded permutation, cut to a whole number of
    global batches (world_size x micro_batch_size) so every rank gets the same count, dealt out by rank.

    The same (n, epoch, seed) gives the same global order on every rank and in every resumed attempt.
    """
    order = list(range(n))
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen).tolist()
    per_step = world_size * micro_batch_size
    usable = order[: (n // per_step) * per_step]
    return [
        usable[s + rank * micro_batch_size : s + (rank + 1) * micro_batch_size]
        for s in range(0, len(usable), per_step)
    ]


def eval_shard(n: int, rank: int, world_size: int, micro_batch_size: int) -> list[list[int]]:
    """Held-out indices of this rank, in order, without dropping any: rank r takes examples r, r+W, ...;
    counts may differ by one batch across ranks (the loop evens that out)."""
    mine = list(range(rank, n, world_size))
    return [mine[i : i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


class LazyBatches(Sequence):
    """Micro-batches collated on access from groups of example indices: `train_batches` can return an epoch's
    batches without holding them all in memory (the driver reads one step's at a time)."""

    def __init__(self, groups: Sequence[Any], collate: Callable[[Any], Any]) -> None:
        self.groups, self.collate = groups, collate

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazyBatches(self.groups[i], self.collate)
        return self.collate(self.groups[i])


class MetricAccumulator:
    """Sums per-example metric values and counts between reports; `reduce` averages over all ranks."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, metrics: dict[str, torch.Tensor | float]) -> None:
        for name, value in metrics.items():
            t = torch.as_tensor(value).detach().float().reshape(-1)
            self.sums[name] = self.sums.get(name, 0.0) + float(t.sum())
            self.counts[name] = self.counts.get(name, 0.0) + t.numel()

    def reduce(self, all_reduce=None) -> dict[str, float]:
        """Global means (`num_tokens`: global sum). `all_reduce` sums a 1-D tensor across ranks in place."""
        names = sorted(self.sums)
        packed = torch.tensor(
            [self.sums[n] for n in names] + [self.counts[n] for n in names], dtype=torch.float64
        )
        if all_reduce is not None:
            all_reduce(packed)
        sums, counts = packed[: len(names)], packed[len(names) :]
        self.sums.clear()
        self.counts.clear()
        return {
            n: float(s) if n == "num_tokens" else float(s / c) if c else float("nan")
            for n, s, c in zip(names, sums, counts)
        }


# --- strategies: how one worker builds, steps, saves and exports the model --------------------------------


class Strategy:
    """How the model is distributed over the workers. `fit` pickles the instance to every worker, where the
    driver loop calls `initialise` once and then the other methods; every method marked collective must be
    called by all ranks together."""

    def data_parallel(self, rank: int, world_size: int) -> tuple[int, int]:
        """(this worker's data-parallel rank, the number of data-parallel replicas): which batches it reads."""
        return rank, world_size

    def initialise(self, task: TrainTask, cfg: TrainLoopConfig, total_steps: int, world_size: int) -> None:
        """Build the model and its DeepSpeed engine (collective); the LR schedule spans `total_steps`."""
        raise NotImplementedError

    def step(self, micro_batches: Sequence[Any], acc: MetricAccumulator) -> None:
        """One optimizer step over this replica's `micro_batches` (collective); adds their metrics to `acc`."""
        raise NotImplementedError

    def evaluate(self, batches: Sequence[Any], acc: MetricAccumulator) -> None:
        """Held-out metrics of `batches` into `acc`, without `eval/` prefix (collective)."""
        raise NotImplementedError

    def lr(self) -> float:
        return self.engine.get_lr()[0]

    def save(self, directory: Path) -> None:
        """Collective: every rank writes its part of the DeepSpeed state under `directory`."""
        self.engine.save_checkpoint(str(directory), tag=_DS_TAG)

    def load(self, directory: Path) -> None:
        """Restore model, optimizer and LR schedule from what `save` wrote."""
        self.engine.load_checkpoint(str(directory), tag=_DS_TAG)

    def export(self, out: Path, rank: int) -> None:
        """Collective: the full model in HF format in `out`, written by rank 0."""
        raise NotImplementedError


class ZeroStrategy(Strategy):
    """Data parallelism with DeepSpeed ZeRO 0-3: every worker holds the model (or its ZeRO shard) and runs
    `task.compute_loss` on its own micro-batches."""

    def initialise(self, task, cfg, total_steps, world_size):
        import deepspeed

        self.task, self.cfg = task, cfg
        self.device = _device(cfg)
        torch.manual_seed(cfg.seed)  # identical initial weights (and LoRA adapters) on every rank
        model = _prepare_model(task.build_model(), cfg)
        self.engine, *_ = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=deepspeed_config(cfg, world_size),
            lr_scheduler=_lr_scheduler(total_steps, cfg),
        )
        if world_size == 1 and cfg.zero_stage == 0:
            # One replica has nothing to all-reduce, yet DeepSpeed's stage-0 path would still flatten every
            # gradient into one buffer each step: a full extra copy of the gradients at the peak.
            self.engine.enable_backward_allreduce = False
        self.engine.train()

    def step(self, micro_batches, acc):
        for batch in micro_batches:
            loss, metrics = self.task.compute_loss(self.engine, _to_device(batch, self.device))
            self.engine.backward(loss)
            self.engine.step()  # DeepSpeed applies the optimizer at the accumulation boundary
            acc.add({"loss": loss.detach(), **metrics})

    def evaluate(self, batches, acc):
        import torch.distributed as dist

        count = torch.tensor([len(batches)])
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        self.engine.eval()
        with torch.no_grad():
            # Under ZeRO-3 a forward is collective, so every rank runs the same number; ranks short of batches
            # repeat one and drop its metrics.
            for i in range(int(count) if batches else 0):
                metrics = self.task.eval_metrics(
                    self.engine, _to_device(batches[min(i, len(batches) - 1)], self.device)
                )
                if i < len(batches):
                    acc.add(metrics)
        self.engine.train()

    def export(self, out, rank):
        _export_hf(self.engine, self.task, self.cfg, out, rank)


class PipelineTask(TrainTask):
    """A `TrainTask` for `PipelineStrategy`: the model comes as DeepSpeed `PipelineModule` stages, and a batch
    is split into the first stage's inputs and the last stage's labels. Batches (`train_batches`,
    `eval_batches`) are per data-parallel replica; `compute_loss` is not used (the module's `loss_fn` is)."""

    def build_pipeline(self, stages: int, data_parallel: int) -> torch.nn.Module:
        """A `deepspeed.pipe.PipelineModule` over `stages` x `data_parallel` ranks (torch.distributed is up)."""
        raise NotImplementedError

    def pipeline_batch(self, batch: Any) -> tuple[Any, torch.Tensor]:
        """(inputs of the first stage, labels of the last stage) of one micro-batch."""
        raise NotImplementedError

    def num_tokens(self, batch: Any) -> float:
        """Tokens the loss counts in `batch` (for `perf/tokens_per_s`)."""
        raise NotImplementedError

    def export_pipeline(self, layer_states: dict[int, dict[str, torch.Tensor]], out: Path) -> None:
        """Save the whole model in HF format in `out` from every layer's state dict, keyed by layer index."""
        raise NotImplementedError


class PipelineStrategy(Strategy):
    """DeepSpeed's pipeline engine (1F1B): `stages` ranks per replica, world_size / stages replicas; each
    optimizer step is one `train_batch` over the replica's `grad_accum_steps` micro-batches. The world rank
    maps to (stage, replica) by DeepSpeed's `PipeDataParallelTopology`: rank = stage * replicas + replica."""

    def __init__(self, stages: int) -> None:
        self.stages = stages

    def data_parallel(self, rank, world_size):
        if world_size % self.stages:
            raise ValueError(f"{world_size} workers are not a multiple of {self.stages} pipeline stages")
        from deepspeed.runtime.pipe.topology import PipeDataParallelTopology

        replicas = world_size // self.stages
        topology = PipeDataParallelTopology(num_pp=self.stages, num_dp=replicas)
        return topology.get_coord(rank).data, replicas

    def initialise(self, task, cfg, total_steps, world_size):
        import deepspeed

        if not isinstance(task, PipelineTask):
            raise TypeError(f"PipelineStrategy needs a PipelineTask, got {type(task).__name__}")
        self.task, self.cfg = task, cfg
        replicas = world_size // self.stages
        torch.manual_seed(cfg.seed)  # identical initial weights on every replica
        net = task.build_pipeline(self.stages, replicas)
        ds = deepspeed_config(cfg, replicas)
        self.engine, *_ = deepspeed.initialize(
            model=net,
            model_parameters=[p for p in net.parameters() if p.requires_grad],
            config=ds,
            lr_scheduler=_lr_scheduler(total_steps, cfg),
        )

    def step(self, micro_batches, acc):
        loss = self.engine.train_batch(data_iter=iter([self.task.pipeline_batch(b) for b in micro_batches]))
        self._add(acc, loss, micro_batches)

    def evaluate(self, batches, acc):
        import torch.distributed as dist

        # eval_batch opens with a global barrier, so every rank makes the same single call: on the fewest
        # micro-batches any replica has.
        count = torch.tensor([len(batches)])
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        n = int(count)
        if n == 0:
            return
        kept = list(batches[:n])
        loss = self.engine.eval_batch(
            iter([self.task.pipeline_batch(b) for b in kept]), num_micro_batches=n
        )
        self.engine.train()
        self._add(acc, loss, kept)

    def _add(self, acc: MetricAccumulator, loss: torch.Tensor, batches: Sequence[Any]) -> None:
        # Every stage of a replica holds the replica's mean loss, so the mean over ranks is the mean over
        # replicas; tokens are counted on the first stage only, since `num_tokens` is summed over ranks.
        first = self.engine.is_first_stage()
        tokens = sum(self.task.num_tokens(b) for b in batches) if first else 0.0
        acc.add({"loss": float(loss), "num_tokens": float(tokens)})

    def export(self, out, rank):
        import torch.distributed as dist

        module = self.engine.module
        mine = {}
        if self.engine.grid.get_data_parallel_rank() == 0:  # one replica is enough: the others are equal
            start = module.parts[self.engine.stage_id]  # this stage's first layer index
            for offset, layer in enumerate(module.forward_funcs):
                mine[start + offset] = {k: v.detach().cpu() for k, v in layer.state_dict().items()}
        gathered = [None] * dist.get_world_size() if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if rank == 0:
            self.task.export_pipeline({i: sd for part in gathered for i, sd in part.items()}, out)
            _save_tokenizer(self.task, out)


# --- the worker: one object holding the run's state ---------------------------------------------------------


@dataclass
class TrainState:
    """What a checkpoint restores besides the DeepSpeed state (trainer_state.json + history.jsonl)."""

    step: int = 0
    total_steps: int = 0
    restarts: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def write(self, directory: Path) -> None:
        state = {"step": self.step, "total_steps": self.total_steps, "restarts": self.restarts}
        (directory / _STATE_FILE).write_text(json.dumps(state))
        (directory / _HISTORY_FILE).write_text("".join(json.dumps(h) + "\n" for h in self.history))

    @classmethod
    def read(cls, directory: Path) -> TrainState:
        """The state saved in `directory`, with one more restart (reading it means resuming)."""
        state = json.loads((directory / _STATE_FILE).read_text())
        history = [json.loads(x) for x in (directory / _HISTORY_FILE).read_text().splitlines() if x]
        return cls(state["step"], state["total_steps"], state["restarts"] + 1, history)


def _train_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    _Worker(config["task"], config["cfg"], config["strategy"], config["tensorboard_dir"]).run()


class _Worker:
    """Build, (resume,) train, evaluate, log, checkpoint and export on one Ray Train worker."""

    def __init__(self, task: TrainTask, cfg: TrainLoopConfig, strategy: Strategy, tensorboard_dir: str):
        if not cfg.use_gpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        _prefer_own_ninja()
        import deepspeed
        import ray.train

        self.task, self.cfg, self.strategy = task, cfg, strategy
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        if not cfg.use_gpu:
            # Two workers on two cores: more intra-op threads than the worker's share only thrash.
            torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
        deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")  # wraps Ray's group
        self.dp_rank, self.dp_world = strategy.data_parallel(self.rank, self.world)
        self.tensorboard_dir = tensorboard_dir
        self.state = TrainState()

    def run(self) -> None:
        import ray.train

        cfg = self.cfg
        batches = self.batches(0)
        steps_per_epoch = len(batches) // cfg.grad_accum_steps
        if steps_per_epoch == 0:
            raise ValueError(
                f"an epoch has {len(batches)} micro-batches per rank, fewer than grad_accum_steps="
                f"{cfg.grad_accum_steps}: add data or lower micro_batch_size/grad_accum_steps/num_workers"
            )
        self.state.total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        self.strategy.initialise(self.task, cfg, self.state.total_steps, self.world)
        start = ray.train.get_checkpoint()
        if start is not None:
            with start.as_directory() as local:
                self.strategy.load(Path(local) / "deepspeed")
                self.state = TrainState.read(Path(local))
            log.info("resumed from step %d/%d", self.state.step, self.state.total_steps)
        writer = self._tensorboard()

        acc = MetricAccumulator()
        t_log = time.perf_counter()
        epoch, skip = divmod(self.state.step, steps_per_epoch)
        progress = _progress(self.rank, self.state.total_steps, self.state.step)
        while self.state.step < self.state.total_steps:
            if epoch > 0:
                batches = self.batches(epoch)
            for s in range(skip, steps_per_epoch):
                micro = batches[s * cfg.grad_accum_steps : (s + 1) * cfg.grad_accum_steps]
                self.strategy.step(micro, acc)
                self.state.step += 1
                progress.update(1)
                line = self.maybe_report(acc, time.perf_counter() - t_log, steps_per_epoch)
                if line is not None:
                    t_log = time.perf_counter()
                    if writer is not None:
                        _write_scalars(writer, line)
                    progress.set_postfix_str(_short(line))
                if self.state.step == self.state.total_steps:
                    break
            epoch, skip = epoch + 1, 0
        progress.close()
        if writer is not None:
            writer.close()

    def batches(self, epoch: int) -> Sequence[Any]:
        """This replica's micro-batches of `epoch`, checked to be equally many on every rank."""
        batches = self.task.train_batches(epoch, self.dp_rank, self.dp_world, self.cfg.micro_batch_size)
        check_equal_across_ranks(len(batches), f"the number of micro-batches in epoch {epoch}")
        return batches

    def maybe_report(self, acc: MetricAccumulator, seconds: float, steps_per_epoch: int) -> dict | None:
        """After an optimizer step: log, evaluate and checkpoint when due; returns the reported metrics."""
        cfg, step = self.cfg, self.state.step
        done = step == self.state.total_steps
        do_eval = done or (cfg.eval_every and step % cfg.eval_every == 0)
        do_ckpt = done or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        if not (do_eval or do_ckpt or step % cfg.log_every == 0):
            return None
        metrics = acc.reduce(self.all_reduce_sum)
        if "num_tokens" in metrics:
            metrics["perf/tokens_per_s"] = metrics["num_tokens"] / seconds
        metrics.update(
            step=step, epoch=step / steps_per_epoch, lr=self.strategy.lr(), restarts=self.state.restarts
        )
        metrics["perf/peak_mem_mb"] = self.max_over_ranks(_peak_memory_mb(cfg.use_gpu))
        if do_eval:
            metrics.update(self.evaluate())
        self.state.history.append(metrics)
        self.report(metrics, checkpoint=bool(do_ckpt), final=done)
        return metrics

    def evaluate(self) -> dict[str, float]:
        batches = self.task.eval_batches(self.dp_rank, self.dp_world, self.cfg.micro_batch_size)
        if self.max_over_ranks(len(batches)) == 0:
            return {}
        acc = MetricAccumulator()
        self.strategy.evaluate(batches, acc)
        return {f"eval/{k}": v for k, v in acc.reduce(self.all_reduce_sum).items()}

    def report(self, metrics: dict[str, Any], *, checkpoint: bool, final: bool) -> None:
        """Report to Ray; with a checkpoint: every rank saves its shard, rank 0 the state, then a barrier, so
        Ray merges complete directories into one checkpoint."""
        import ray.train
        import torch.distributed as dist

        if not checkpoint:
            if self.cfg.ray_reports == "every_log" or any(k.startswith("eval/") for k in metrics):
                ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="rayflow-ckpt-") as tmp:
            self.strategy.save(Path(tmp) / "deepspeed")
            if self.rank == 0:
                self.state.write(Path(tmp))
            if final:
                self.strategy.export(Path(tmp) / EXPORT_SUBDIR, self.rank)
            dist.barrier()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def _tensorboard(self):
        """Rank 0's event writer. A resumed attempt appends a new events file; steps it repeats (logged after
        the checkpoint it resumed from) show twice, as TensorBoard shows any rewritten step."""
        if self.rank != 0:
            return None
        from tensorboardX import SummaryWriter

        return SummaryWriter(self.tensorboard_dir)

    # collectives over all ranks

    def all_reduce_sum(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def max_over_ranks(self, value: float) -> float:
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)



def _prefer_own_ninja() -> None:
    """Put the `ninja` installed beside this interpreter first on PATH, where there is one.

    DeepSpeed builds its CPU ops (the shm all-reduce) with torch's JIT builder, which runs the first `ninja` on
    PATH and rebuilds when the build log was written by another version: the pip `ninja` (1.13) and Debian's
    (1.11) hash commands differently, so workers started from a shell without the venv on PATH and workers of
    a `ray job submit` (venv first) rebuilt the op in turn, ~60 CPU-seconds each time.
    """
    own = Path(sys.executable).parent
    if (own / "ninja").is_file() and os.environ.get("PATH", "").split(os.pathsep)[0] != str(own):
        os.environ["PATH"] = f"{own}{os.pathsep}{os.environ.get('PATH', '')}"


def check_equal_across_ranks(n: int, what: str) -> None:
    """Collective: raise on every rank when ranks hold different `n` (a mismatch in per-rank batch counts would
    otherwise surface as a collective hanging until its timeout, far from the cause)."""
    import torch.distributed as dist

    t = torch.tensor([n, -n], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise RuntimeError(
            f"ranks disagree on {what}: between {-int(t[1])} and {int(t[0])}; "
            "TrainTask.train_batches must give every rank the same count"
        )


def _write_scalars(writer, metrics: dict[str, Any]) -> None:
    for key, value in metrics.items():
        if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(key, value, metrics["step"])
    writer.flush()


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Loss (and eval loss, where evaluated) against the optimizer step, as a PNG; None without a loss."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*train), label="train loss")
    evals = [(h["step"], h["eval/loss"]) for h in history if "eval/loss" in h]
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _lr_scheduler(total_steps: int, cfg: TrainLoopConfig):
    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, total_steps, cfg))


def _device(cfg: TrainLoopConfig) -> torch.device:
    if not cfg.use_gpu:
        return torch.device("cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


def _prepare_model(model: torch.nn.Module, cfg: TrainLoopConfig) -> torch.nn.Module:
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    return model


def _export_hf(engine, task: TrainTask, cfg: TrainLoopConfig, out: Path, rank: int) -> None:
    """Collective: gather the full weights onto rank 0 and save an HF model directory there.

    Under ZeRO 0-2 without LoRA rank 0 saves its own module directly. ZeRO-3 parameters are gathered one at a
    time, so no rank ever holds more than one full parameter beyond its shard; rank 0 accumulates the state dict
    on CPU. The export dtype is the training dtype.
    """
    import deepspeed

    module = engine.module
    if cfg.lora is None and cfg.zero_stage < 3:
        # Every rank holds the full weights: save them as they are, without a second copy in memory.
        if rank == 0:
            module.save_pretrained(out)
            _save_tokenizer(task, out)
        return
    state: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None, enabled=cfg.zero_stage == 3):
            if rank == 0:
                state[name] = param.detach().to("cpu", copy=True)
    if rank != 0:
        return
    # Persistent buffers (never partitioned); non-persistent ones are not part of a checkpoint.
    persistent = set(module.state_dict())
    state.update(
        {k: b.detach().cpu() for k, b in module.named_buffers() if k in persistent and k not in state}
    )
    # The live module is sharded or wrapped: load the gathered weights into a fresh copy and save that.
    target = _prepare_model(task.build_model(), cfg.model_copy(update={"gradient_checkpointing": False}))
    target.load_state_dict(state)
    if cfg.lora is not None:
        target = target.merge_and_unload()
    target.save_pretrained(out)
    _save_tokenizer(task, out)


def _save_tokenizer(task: TrainTask, out: Path) -> None:
    if task.tokenizer_dir:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(task.tokenizer_dir).save_pretrained(out)


def _peak_memory_mb(use_gpu: bool) -> float:
    """Peak GPU memory allocated by torch, or on CPU the process's peak resident set (Linux: ru_maxrss in KiB)."""
    if use_gpu:
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _progress(rank: int, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=rank != 0, mininterval=2.0)


def _short(metrics: dict[str, Any]) -> str:
    keys = ("loss", "eval/loss", "rewards/accuracies", "eval/rewards/accuracies")
    return " ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)
