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

What the loop owns, so tasks don't:
- a `TorchTrainer` with `num_workers` workers (gloo on CPU, NCCL on GPUs), each building the model and wrapping it
  with DeepSpeed (ZeRO 0-3, optional optimizer/parameter offload, bf16 or fp32) from `TrainLoopConfig`;
- optional LoRA through `peft`, gradient checkpointing, gradient accumulation, warmup + constant/linear/cosine LR;
- evaluation every `eval_every` optimizer steps on the task's held-out batches;
- checkpoints every `checkpoint_every` steps: every rank saves its DeepSpeed shard, then a barrier, then
  `ray.train.report(metrics, checkpoint)` so Ray merges the shards into one checkpoint on `storage_path`;
- recovery: `FailureConfig(max_failures)` restarts the worker group after a worker dies and the loop resumes from
  `ray.train.get_checkpoint()` (model, optimizer, LR schedule, data position, history; the `restarts` metric counts
  resumes). Re-running `fit` with the same
  `storage_path` and `name` resumes a finished-or-crashed run the same way;
- the final export: the full model (ZeRO-3 shards gathered one parameter at a time, LoRA merged) saved with
  `save_pretrained` next to the task's tokenizer, inside the final checkpoint and copied to `export_dir`.

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
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rayflow.config import Config

_DS_TAG = "state"  # one fixed DeepSpeed tag: every checkpoint directory holds exactly one state
_STATE_FILE = "trainer_state.json"
_HISTORY_FILE = "history.jsonl"
EXPORT_SUBDIR = "hf"


class LoraSettings(Config):
    """LoRA adapters through `peft`; the export merges them into the base weights."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj"), description="module names to adapt"
    )


class TrainLoopConfig(Config):
    """Distributed training settings shared by every rayflow training job."""

    num_workers: int = Field(2, ge=1, description="data-parallel workers (one process each)")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL; otherwise CPU + gloo")
    micro_batch_size: int = Field(4, ge=1, description="examples per worker per forward pass")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs when set")
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("linear", description="decay after warmup")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="fraction of steps with linear warmup from 0")
    max_grad_norm: float = Field(1.0, ge=0, description="0 = no clipping")
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = Field(False, description="ZeRO-Offload of optimizer state to CPU (stage >= 1)")
    offload_params: bool = Field(False, description="parameter offload to CPU (stage 3)")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="training precision (no fp16 on CPU)"
    )
    torch_adam: bool | None = Field(
        None, description="torch AdamW instead of DeepSpeed's fused one; None = on CPU"
    )
    gradient_checkpointing: bool = False
    lora: LoraSettings | None = Field(None, description="set to train LoRA adapters instead of all weights")
    log_every: int = Field(1, ge=1, description="optimizer steps between metric reports")
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
    seed: int = 0

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


def fit(
    task: TrainTask,
    cfg: TrainLoopConfig,
    *,
    storage_path: str | os.PathLike,
    name: str,
    export_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Any] | None = None,
) -> FitResult:
    """Train `task` on the current Ray cluster; blocks until done and returns a `FitResult`.

    `storage_path` (absolute; shared storage on a multi-node cluster) holds `name/` with the checkpoints. The same
    (`storage_path`, `name`) resumes from the latest checkpoint. The final HF export is copied to `export_dir` when
    given. `callbacks` are Ray Train run-config callbacks, e.g. `TuneReportCallback()` when `fit` runs inside a
    Tune trial. Raises `RuntimeError` with the worker's error when training fails beyond `cfg.max_failures`.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = Path(storage_path).expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"task": task, "cfg": cfg},
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
    return FitResult(dict(result.metrics or {}), history, ckpt_path, export_path, str(result.path))


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


# --- the worker function ----------------------------------------------------------------------------------


def _train_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: build, (resume,) train, evaluate, checkpoint, export."""
    task: TrainTask = config["task"]
    cfg: TrainLoopConfig = config["cfg"]
    if not cfg.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    if not cfg.use_gpu:
        # Two workers on two cores: more intra-op threads than the worker's share only thrash.
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    deepspeed.init_distributed(dist_backend="nccl" if cfg.use_gpu else "gloo")  # wraps Ray's process group

    def all_reduce_sum(t: torch.Tensor) -> None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def all_ranks_equal(n: int, what: str) -> None:
        t = torch.tensor([n, -n], dtype=torch.long)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise RuntimeError(
                f"ranks disagree on {what}: between {-int(t[1])} and {int(t[0])}; "
                "TrainTask.train_batches must give every rank the same count"
            )

    torch.manual_seed(cfg.seed)  # identical initial weights (and LoRA adapters) on every rank
    model = _prepare_model(task.build_model(), cfg)
    batches = task.train_batches(0, rank, world, cfg.micro_batch_size)
    all_ranks_equal(len(batches), "the number of micro-batches per epoch")
    steps_per_epoch = len(batches) // cfg.grad_accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"an epoch has {len(batches)} micro-batches per rank, fewer than grad_accum_steps="
            f"{cfg.grad_accum_steps}: add data or lower micro_batch_size/grad_accum_steps/num_workers"
        )
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch

    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(cfg, world),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_multiplier(s, total_steps, cfg)
        ),
    )

    step, restarts, history = 0, 0, []
    start_ckpt = ray.train.get_checkpoint()
    if start_ckpt is not None:
        with start_ckpt.as_directory() as local:
            engine.load_checkpoint(str(Path(local) / "deepspeed"), tag=_DS_TAG)
            state = json.loads((Path(local) / _STATE_FILE).read_text())
            step, restarts = state["step"], state["restarts"] + 1
            history_file = Path(local) / _HISTORY_FILE
            history = [json.loads(line) for line in history_file.read_text().splitlines() if line]
        if rank == 0:
            print(f"[rayflow.train] resumed from step {step}/{total_steps}", flush=True)

    def report(metrics: dict[str, Any], *, checkpoint: bool, final: bool = False) -> None:
        history.append(metrics)
        if not checkpoint:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="rayflow-ckpt-") as tmp:
            engine.save_checkpoint(str(Path(tmp) / "deepspeed"), tag=_DS_TAG)
            if rank == 0:
                (Path(tmp) / _STATE_FILE).write_text(
                    json.dumps({"step": step, "total_steps": total_steps, "restarts": restarts})
                )
                (Path(tmp) / _HISTORY_FILE).write_text("".join(json.dumps(h) + "\n" for h in history))
            if final:
                _export_hf(engine, task, cfg, Path(tmp) / EXPORT_SUBDIR, rank)
            dist.barrier()  # every shard is on disk before Ray collects the directories
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def evaluate() -> dict[str, float]:
        eval_batches = task.eval_batches(rank, world, cfg.micro_batch_size)
        count = torch.tensor([len(eval_batches)])
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        if int(count) == 0:
            return {}
        acc = MetricAccumulator()
        engine.eval()
        with torch.no_grad():
            # Under ZeRO-3 a forward is collective, so every rank runs the same number; ranks short of batches
            # repeat one and drop its metrics.
            for i in range(int(count)):
                if eval_batches:
                    metrics = task.eval_metrics(
                        engine, _to_device(eval_batches[min(i, len(eval_batches) - 1)], device)
                    )
                    if i < len(eval_batches):
                        acc.add(metrics)
        engine.train()
        return {f"eval/{k}": v for k, v in acc.reduce(all_reduce_sum).items()}

    engine.train()
    acc = MetricAccumulator()
    t_log = time.perf_counter()
    epoch, skip = divmod(step, steps_per_epoch)
    progress = _progress(rank, total_steps, step)
    while step < total_steps:
        if epoch > 0:
            batches = task.train_batches(epoch, rank, world, cfg.micro_batch_size)
            all_ranks_equal(len(batches), f"the number of micro-batches in epoch {epoch}")
        usable = batches[: steps_per_epoch * cfg.grad_accum_steps]
        for micro in range(skip * cfg.grad_accum_steps, len(usable)):
            loss, metrics = task.compute_loss(engine, _to_device(usable[micro], device))
            engine.backward(loss)
            engine.step()
            acc.add({"loss": loss.detach(), **metrics})
            if (micro + 1) % cfg.grad_accum_steps:
                continue
            step += 1
            progress.update(1)
            done = step == total_steps
            do_eval = done or (cfg.eval_every and step % cfg.eval_every == 0)
            do_ckpt = done or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
            if not (done or do_eval or do_ckpt or step % cfg.log_every == 0):
                continue
            metrics_out = acc.reduce(all_reduce_sum)
            elapsed = time.perf_counter() - t_log
            if "num_tokens" in metrics_out:
                metrics_out["perf/tokens_per_s"] = metrics_out["num_tokens"] / elapsed
            metrics_out.update(
                step=step, epoch=step / steps_per_epoch, lr=engine.get_lr()[0], restarts=restarts
            )
            peak = torch.tensor([_peak_memory_mb(cfg.use_gpu)])
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
            metrics_out["perf/peak_mem_mb"] = float(peak)
            if do_eval:
                metrics_out.update(evaluate())
            report(metrics_out, checkpoint=bool(do_ckpt), final=done)
            if rank == 0:
                progress.set_postfix_str(_short(metrics_out))
            t_log = time.perf_counter()
            if done:
                break
        epoch, skip = epoch + 1, 0
    progress.close()


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

    ZeRO-3 parameters are gathered one at a time, so no rank ever holds more than one full parameter beyond its
    shard; rank 0 accumulates the state dict on CPU. The export dtype is the training dtype.
    """
    import deepspeed

    module = engine.module
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
    if cfg.lora is not None or cfg.zero_stage == 3:
        # The live module is sharded or wrapped: load the gathered weights into a fresh copy and save that.
        target = _prepare_model(task.build_model(), cfg.model_copy(update={"gradient_checkpointing": False}))
        target.load_state_dict(state)
        if cfg.lora is not None:
            target = target.merge_and_unload()
        target.save_pretrained(out)
    else:
        module.save_pretrained(out, state_dict=state)
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
