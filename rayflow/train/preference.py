"""Preference optimisation on the shared loop: the DPO family with a chosen reference policy, and WSPO.

DPO (`method: dpo`). The reference is a choice (`reference.kind`):
- `model`: log-probs of a frozen model, by default the policy's own initial (SFT) weights; `reference.model` names
  another one, e.g. a stronger reference — its tokenizer may differ, since only per-sequence sums enter the loss;
- `posterior`: no reference (zeros), h = s_θ(y_w) - s_θ(y_l); needs a large β (the study's best was 100);
- `likelihood`: the reference model's log-prob of each response with the prompt removed (log p(y)).
Reference log-probs are computed once before training (`rayflow.train.precompute`, Ray Data + the engine layer,
cached on disk), so only the policy is resident while training. The loss is `rayflow.train.losses.dpo_loss`
with `dpo.loss_type`; IPO gets summed log-ratios unless `dpo.ipo_length_normalize` (then per-token means).

WSPO (`method: wspo`). The strong policy regresses its log-ratio to its own initial weights onto the weak model's
alignment shift (weak aligned vs weak reference), token by token (`wspo.form: token`, the official code) or as
length-normalised sequence means (`sequence`). Only the chosen side of each row is used. The whole weak-to-strong
pipeline runs from one config: weak base -> weak SFT (if `wspo.weak_sft_data`) -> weak aligned by DPO (unless
`wspo.weak_aligned` is given) -> per-token log-probs of the strong reference and the weak pair, precomputed ->
WSPO on the strong model with only it resident. All models must share one tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rayflow.config import Config
from rayflow.llm import EngineConfig, load_tokenizer, resolve_model_path
from rayflow.train.lm_task import CausalLMTask, place_tokens
from rayflow.train.logprobs import collate, collate_preference, split_pair, token_logps
from rayflow.train.loop import TrainLoopConfig, fit
from rayflow.train.losses import DPOLossType, dpo_loss, dpo_metrics, wspo_loss, wspo_metrics
from rayflow.train.precompute import PrecomputeConfig, precompute_logps
from rayflow.train.preference_data import DataConfig, Example, load_splits, write_errors
from rayflow.train.sft import SFTConfig, run_sft, training_summary
from rayflow.workflow import Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)


class DPOSettings(Config):
    beta: float = Field(0.1, gt=0, description="KL strength")
    loss_type: DPOLossType = Field("sigmoid", description="sigmoid (DPO), hinge, ipo or robust")
    label_smoothing: float = Field(0.0, ge=0, le=0.5, description="ε for sigmoid (cDPO) and robust")
    ipo_length_normalize: bool = Field(False, description="ipo on per-token mean log-ratios instead of sums")


class ReferenceSettings(Config):
    """The frozen model behind the DPO reference, and the engine backend that scores it."""

    kind: Literal["model", "posterior", "likelihood"] = Field(
        "model", description="model: a frozen model's log-probs; posterior: none; likelihood: prompt removed"
    )
    model: str | None = Field(None, description="None = the policy's initial model")
    backend: Literal["hf", "vllm", "openai"] = Field("hf", description="engine backend of the scoring pass")
    base_url: str | None = Field(None, description="openai backend: the server's /v1 URL")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="weights dtype of the scoring engine"
    )
    max_model_len: int | None = Field(None, description="scoring engine's context length; None = model's")
    batch_size: int = Field(16, ge=1, description="hf backend: rows per forward")

    def engine(self, default_model: str) -> EngineConfig:
        return EngineConfig(
            backend=self.backend,
            model=self.model or default_model,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            batch_size=self.batch_size,
            base_url=self.base_url,
        )


class WSPOSettings(Config):
    gamma: float = Field(0.1, gt=0, description="β_strong/β_weak; the fixed point is Δs = Δw/γ")
    form: Literal["token", "sequence"] = Field(
        "token", description="token: per-token regression (official code); sequence: length-normalised means"
    )
    weak_base: str = Field(
        "tiny:tiny", description="the weak model before alignment (SFT'd first if weak_sft_data)"
    )
    weak_aligned: str | None = Field(None, description="None = align weak_base by DPO on data.train here")
    weak_sft_data: str | None = Field(
        None, description="{prompt, response} rows to SFT the weak base on first"
    )
    weak_sft_train: TrainLoopConfig = TrainLoopConfig(num_workers=1, lr=1e-4)
    weak_dpo: DPOSettings = DPOSettings()
    weak_dpo_train: TrainLoopConfig = TrainLoopConfig(num_workers=1, lr=1e-5)


class PreferenceConfig(Config):
    """Preference training job: DPO family or WSPO."""

    method: Literal["dpo", "wspo"] = Field("dpo", description="dpo: the DPO family; wspo: weak-to-strong")
    model: str = Field(
        "tiny:tiny", description="the policy's initial (SFT) model: path, hub id or tiny:<size>"
    )
    output_dir: str = Field(
        "outputs/preference", description="model/, errors/, history.jsonl, summary.json, run.json"
    )
    data: DataConfig = DataConfig(train="examples/preference/pairs.jsonl")
    dpo: DPOSettings = DPOSettings()
    reference: ReferenceSettings = ReferenceSettings()
    wspo: WSPOSettings = WSPOSettings()
    train: TrainLoopConfig = TrainLoopConfig()
    precompute: PrecomputeConfig = PrecomputeConfig()

    @model_validator(mode="after")
    def _check(self) -> PreferenceConfig:
        if self.dpo.loss_type in ("hinge", "ipo") and self.dpo.label_smoothing:
            raise ValueError(
                f"dpo.label_smoothing applies to sigmoid and robust only, not {self.dpo.loss_type}"
            )
        if self.dpo.loss_type == "robust" and self.dpo.label_smoothing >= 0.5:
            raise ValueError("dpo.label_smoothing must be < 0.5 for robust")
        return self


# --- tasks ---------------------------------------------------------------------------------------------------


class DPOTask(CausalLMTask):
    """Chosen and rejected in one concatenated forward; reference log-probs come with the rows."""

    def __init__(self, *args, dpo: DPOSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.dpo = dpo

    def make_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate_preference(
            [r["prompt_ids"] for r in rows],
            [r["chosen_ids"] for r in rows],
            [r["rejected_ids"] for r in rows],
            self.pad_id,
        )
        for key in ("ref_chosen", "ref_rejected", "ref_chosen_len", "ref_rejected_len"):
            batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.float32)
        return batch

    def compute_loss(self, model, batch):
        logps = token_logps(model, batch)
        pc, pr = split_pair(logps.sum(-1))
        nc, nr = split_pair(batch["loss_mask"].sum(-1).float())
        rc, rr = batch["ref_chosen"], batch["ref_rejected"]
        if self.dpo.ipo_length_normalize:
            pc, pr = pc / nc, pr / nr
            rc, rr = rc / batch["ref_chosen_len"].clamp(min=1), rr / batch["ref_rejected_len"].clamp(min=1)
        d = self.dpo
        losses = dpo_loss(
            pc, pr, rc, rr, beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing
        )
        metrics = dpo_metrics(pc, pr, rc, rr, beta=d.beta)
        metrics["logratio/chosen"] = (pc - rc).detach()  # drift from the reference: likelihood displacement
        metrics["logratio/rejected"] = (pr - rr).detach()
        metrics["num_tokens"] = nc + nr
        return losses.mean(), metrics


class WSPOTask(CausalLMTask):
    """Per-token regression of the strong log-ratio on the weak one; frozen log-probs come with the rows."""

    def __init__(self, *args, gamma: float, form: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma, self.form = gamma, form

    def make_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate([(r["prompt_ids"], r["response_ids"]) for r in rows], self.pad_id)
        for key in ("ref", "weak_aligned", "weak_base"):
            batch[key] = place_tokens([r[key] for r in rows], batch["loss_mask"])
        return batch

    def compute_loss(self, model, batch):
        logps = token_logps(model, batch)
        args = (logps, batch["ref"], batch["weak_aligned"], batch["weak_base"], batch["loss_mask"])
        losses = wspo_loss(*args, gamma=self.gamma, form=self.form)
        metrics = wspo_metrics(*args, gamma=self.gamma)
        metrics["num_tokens"] = batch["loss_mask"].sum(-1).float()
        return losses.mean(), metrics


# --- jobs ----------------------------------------------------------------------------------------------------


def check(cfg: PreferenceConfig) -> None:
    """The data files and every model the method needs exist (before Ray starts)."""
    require_path(cfg.data.train, "data.train")
    require_path(cfg.data.eval, "data.eval")
    require_model(cfg.model, "model")
    if cfg.method == "dpo" and cfg.reference.backend != "openai":
        require_model(cfg.reference.model, "reference.model")
    if cfg.method == "wspo":
        require_model(cfg.wspo.weak_base, "wspo.weak_base")
        require_model(cfg.wspo.weak_aligned, "wspo.weak_aligned")
        require_path(cfg.wspo.weak_sft_data, "wspo.weak_sft_data")


def run(cfg: PreferenceConfig) -> Result:
    """The preference workflow on the current Ray cluster: the configured method, run.json and summary.json."""
    with Workflow("train_preference", cfg, cfg.output_dir) as wf:
        with wf.phase(cfg.method):
            summary = run_preference(cfg)
        shown = {k: round(v, 4) for k, v in summary["final_metrics"].items() if k.startswith(("eval/", "loss"))}
        return wf.finish(
            summary,
            f"{cfg.method} done: {summary['train_examples']} examples ({summary['errors']} rejected); "
            f"{shown} -> {summary['model_dir']}",
        )


def run_preference(cfg: PreferenceConfig) -> dict[str, Any]:
    """Run the configured method on the current Ray cluster; writes under `cfg.output_dir`, returns the
    summary (also in `output_dir/summary.json`)."""
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.method == "dpo":
        return run_dpo(cfg.model, cfg.data, cfg.dpo, cfg.reference, cfg.train, cfg.precompute, out)
    return run_wspo(cfg, out)


def run_dpo(
    model: str,
    data: DataConfig,
    dpo: DPOSettings,
    reference: ReferenceSettings,
    train: TrainLoopConfig,
    precompute: PrecomputeConfig,
    out: Path,
    *,
    name: str = "dpo",
) -> dict[str, Any]:
    """One DPO-family run: load pairs, precompute the reference, train, export to `out/model`; returns the
    run's summary, also written to `out/summary.json` with history.jsonl and errors/."""
    model_path = resolve_model_path(model)
    tokenizer = load_tokenizer(EngineConfig(model=model_path))
    train_ex, eval_ex, errors, stats = load_splits(data, "preference", tokenizer)
    write_errors(errors, out)
    log.info("%s: reference log-probs (%s) of %d pairs", name, reference.kind, len(train_ex) + len(eval_ex))
    refs = split_values(
        reference_values(train_ex + eval_ex, reference, model_path, tokenizer, precompute), len(train_ex)
    )
    stats["reference"] = {
        "kind": reference.kind,
        "model": reference.model or model,
        "cache": refs[0].get("cache"),  # one entry for train + eval; None when nothing is scored
    }
    task = DPOTask(
        model_path,
        tokenizer.pad_token_id,
        dpo_rows(train_ex, refs[0]),
        dpo_rows(eval_ex, refs[1]),
        seed=train.seed,
        dpo=dpo,
    )
    log.info("%s: training on %d pairs (%d held out)", name, len(train_ex), len(eval_ex))
    result = fit(task, train, storage_path=out / "ray", name=name, export_dir=out / "model")
    return training_summary(out, result, stats)


def reference_values(
    examples: list[Example],
    reference: ReferenceSettings,
    policy_path: str,
    tokenizer,
    precompute: PrecomputeConfig,
) -> dict[str, Any]:
    """The reference's summed log-probs and token counts of each example's chosen and rejected responses:
    zeros for `posterior`, else precomputed (conditional for `model`, prompt removed for `likelihood`), cached."""
    if not examples or reference.kind == "posterior":
        zeros = [0.0] * len(examples)
        lens = [len(e.chosen_ids) for e in examples], [len(e.rejected_ids) for e in examples]
        return {"chosen": zeros, "rejected": zeros, "chosen_len": lens[0], "rejected_len": lens[1]}
    mode = "unconditional" if reference.kind == "likelihood" else "conditional"
    scored = precompute_logps(
        examples,
        reference.engine(policy_path),
        policy_tokenizer=tokenizer,
        mode=mode,
        cfg=precompute,
    )
    return {
        "chosen": scored.chosen,
        "rejected": scored.rejected,
        "chosen_len": scored.chosen_lengths,
        "rejected_len": scored.rejected_lengths,
        "cache": scored.cache_path,
    }


def split_values(values: dict[str, Any], n_first: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `reference_values` of `first + second` into those of `first` and of `second` (scored in one pass,
    so one Ray Data job and one cache entry serve both splits)."""
    first, second = {}, {}
    for key, value in values.items():
        if isinstance(value, list):
            first[key], second[key] = value[:n_first], value[n_first:]
        else:
            first[key] = second[key] = value
    return first, second


def dpo_rows(examples: list[Example], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """`DPOTask` rows: token ids plus the `reference_values` of each example."""
    return [
        {
            "prompt_ids": e.prompt_ids,
            "chosen_ids": e.chosen_ids,
            "rejected_ids": e.rejected_ids,
            "ref_chosen": ref["chosen"][i],
            "ref_rejected": ref["rejected"][i],
            "ref_chosen_len": ref["chosen_len"][i],
            "ref_rejected_len": ref["rejected_len"][i],
        }
        for i, e in enumerate(examples)
    ]


def run_wspo(cfg: PreferenceConfig, out: Path) -> dict[str, Any]:
    """The weak-to-strong pipeline; each stage writes under `out/<stage>/`, the strong model to `out/model`."""
    w = cfg.wspo
    stages: dict[str, Any] = {}
    weak_ref = resolve_model_path(w.weak_base)
    if w.weak_sft_data:
        log.info("WSPO phase 1: SFT of the weak base %s", w.weak_base)
        sft_out = out / "weak_sft"
        stages["weak_sft"] = run_sft(
            SFTConfig(
                model=weak_ref,
                output_dir=str(sft_out),
                data=cfg.data.model_copy(update={"train": w.weak_sft_data, "eval": None}),
                train=w.weak_sft_train,
            ),
            name="weak-sft",
        )
        weak_ref = str(sft_out / "model")
    weak_aligned = resolve_model_path(w.weak_aligned) if w.weak_aligned else None
    if weak_aligned is None:
        log.info("WSPO phase 2: aligning the weak model by DPO")
        dpo_out = out / "weak_aligned"
        dpo_out.mkdir(parents=True, exist_ok=True)
        stages["weak_aligned"] = run_dpo(
            weak_ref,
            cfg.data,
            w.weak_dpo,
            ReferenceSettings(),
            w.weak_dpo_train,
            cfg.precompute,
            dpo_out,
            name="weak-dpo",
        )
        weak_aligned = str(dpo_out / "model")

    strong = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(EngineConfig(model=strong))
    train_ex, eval_ex, errors, stats = load_splits(cfg.data, "response", tokenizer)
    write_errors(errors, out)
    # One scoring pass per frozen model over train + eval: one Ray Data job and one cache entry each.
    everything = train_ex + eval_ex
    log.info("WSPO phase 3: per-token log-probs of the strong reference and the weak pair")
    frozen = {}
    for key, model in (("ref", strong), ("weak_aligned", weak_aligned), ("weak_base", weak_ref)):
        engine = cfg.reference.model_copy(update={"model": None}).engine(model)
        frozen[key] = precompute_logps(
            everything, engine, policy_tokenizer=tokenizer, per_token=True, cfg=cfg.precompute
        ).chosen_tokens
    rows = [
        {"prompt_ids": e.prompt_ids, "response_ids": e.chosen_ids, **{k: v[i] for k, v in frozen.items()}}
        for i, e in enumerate(everything)
    ]
    rows = [rows[: len(train_ex)], rows[len(train_ex) :]]
    task = WSPOTask(
        strong, tokenizer.pad_token_id, rows[0], rows[1], seed=cfg.train.seed, gamma=w.gamma, form=w.form
    )
    log.info("WSPO phase 4: training the strong model %s", cfg.model)
    result = fit(task, cfg.train, storage_path=out / "ray", name="wspo", export_dir=out / "model")
    stats["stages"] = stages
    stats["weak_models"] = {"weak_reference": weak_ref, "weak_aligned": weak_aligned}
    return training_summary(out, result, stats)
