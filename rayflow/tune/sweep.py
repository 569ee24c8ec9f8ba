"""The DPO β sweep on Ray Tune, Train V2 style: one driver function per trial runs the shared Ray Train +
DeepSpeed loop and forwards its metrics to Tune with `TuneReportCallback`.

    check(cfg)  # inputs exist and output_dir holds no other sweep (before Ray starts)
    run(cfg)    # on a running Ray cluster; writes everything under cfg.output_dir, returns a `Result`

Every trial's settings are one typed `PreferenceConfig`, built on the driver from one template (the sweep's
model, data, `dpo` and `train`) with the trial's grid point (β, loss type, seed) and reference, and validated
there with all of `PreferenceConfig`'s rules before any trial starts (`trial_configs`). The trials receive
these objects (`TrialSetup`), never dicts to re-parse.

Stages, all under `output_dir`:
1. `prepared/<reference>/`: the pairs tokenised once and each reference's log-probs computed once (Ray Data,
   cached on disk by `rayflow.train.precompute`), shared by every trial that uses that reference.
2. `tune/`: the Tune experiment. The grid is β x seed x loss type x reference; references that are another
   model get `grid.stronger_reference_betas` too (the best β rises to ~1 with a stronger reference), and a
   `posterior` (reference-free) reference is swept over `grid.posterior_betas` instead (up to 100, the RefDPO
   study's best for it). Every trial
   trains under `train/train-<trial id>/` and exports its final HF model to `models/<trial id>/`. FIFO by
   default: early-stopping schedulers judge trials by early results, which mislead for β (see `report.WHY_FIFO`).
   Rerunning with the same `output_dir` restores the experiment (`Tuner.restore`): finished trials are kept,
   unfinished ones resume from their last checkpoint.
3. `eval/`: the post-sweep evaluation stage (`rayflow.tune.evaluation`), in one Ray task.
4. `results.csv`, `report.md`, `plots/*.png`, `summary.json` (`rayflow.tune.report`), and `run.json`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from ray.train import UserCallback

from rayflow.config import Config, dump_config
from rayflow.llm import EngineConfig, load_tokenizer, resolve_model_path
from rayflow.runinfo import write_json
from rayflow.train.loop import TrainLoopConfig, fit
from rayflow.train.losses import DPOLossType
from rayflow.train.precompute import PrecomputeConfig
from rayflow.train.preference import (
    DPOSettings,
    DPOTask,
    PreferenceConfig,
    ReferenceSettings,
    dpo_rows,
    reference_values,
    split_values,
)
from rayflow.train.preference_data import DataConfig, load_splits, write_errors
from rayflow.tune.degeneration import degeneration_reasons
from rayflow.tune.evaluation import BASELINE, EvalConfig, evaluate_models
from rayflow.tune.report import (
    TRAIN_COLUMNS,
    SelectionConfig,
    choose,
    plot_metrics,
    results_table,
    write_report,
)
from rayflow.workflow import InputError, Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)

EXPERIMENT = "tune"
# What a rerun may change and still restore the sweep: nothing the trials' training depends on.
RESTORE_FREE = ("output_dir", "precompute", "evaluation", "selection")


class GridConfig(Config):
    """The search space: the cross product of these lists."""

    betas: tuple[float, ...] = Field((0.005, 0.01, 0.02, 0.05, 0.1), min_length=1, description="KL strengths")
    stronger_reference_betas: tuple[float, ...] = Field(
        (1.0, 10.0), description="added for references that are another model than the policy"
    )
    posterior_betas: tuple[float, ...] = Field(
        (1.0, 10.0, 100.0),
        description="reference kind posterior's betas, instead of betas (RefDPO's best: 100)",
    )
    seeds: tuple[int, ...] = Field((0,), min_length=1, description="training seeds (data order, LoRA init)")
    loss_types: tuple[DPOLossType, ...] = Field(
        ("sigmoid",), min_length=1, description="DPO losses: sigmoid, hinge, ipo, robust"
    )

    @model_validator(mode="after")
    def _positive(self) -> GridConfig:
        for b in self.betas + self.stronger_reference_betas + self.posterior_betas:
            if b <= 0:
                raise ValueError(f"every beta must be > 0, got {b}")
        return self


class TuneSettings(Config):
    """How Ray Tune runs the trials."""

    scheduler: Literal["fifo", "asha"] = Field("fifo", description="asha stops trials early (misleads for β)")
    asha_metric: str = Field("h", description="asha: a metric of every report (training h: raw margin)")
    asha_grace_period: int = Field(1, ge=1, description="asha: reports before a trial can be stopped")
    asha_reduction_factor: int = Field(4, ge=2, description="asha: keep 1/factor of the trials per rung")
    max_concurrent_trials: int = Field(1, ge=1, description="⌊CPUs / (cpus_per_trial + workers·cpus)⌋")
    cpus_per_trial: float = Field(
        1.0, gt=0, description="the trial's driver process (TorchTrainer controller)"
    )
    trial_retries: int = Field(
        0, ge=0, description="reruns of a failed trial (training resumes from its checkpoint)"
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="also log to MLflow (needs `pip install mlflow`)"
    )
    mlflow_experiment: str = Field("rayflow-sweep-beta", description="MLflow experiment name")


class SweepConfig(Config):
    """DPO β sweep: grid, training, post-sweep evaluation and the rule that picks β."""

    model: str = Field(
        "tiny:tiny", description="the policy's initial (SFT) model: path, hub id or tiny:<size>"
    )
    output_dir: str = Field(
        "outputs/sweep_beta", description="the sweep directory (shared storage on a cluster)"
    )
    data: DataConfig = DataConfig(train="examples/preference/pairs.jsonl")
    references: dict[str, ReferenceSettings] = Field(
        default_factory=lambda: {"sft": ReferenceSettings()},
        description="name -> reference; each is swept (default: the policy's own initial model)",
    )
    grid: GridConfig = GridConfig()
    dpo: DPOSettings = Field(
        DPOSettings(), description="every trial's DPO settings; the grid sets beta and loss_type per trial"
    )
    train: TrainLoopConfig = Field(
        TrainLoopConfig(num_workers=1, eval_every=0),
        description="every trial's training settings; the grid sets seed per trial",
    )
    precompute: PrecomputeConfig = PrecomputeConfig()
    tune: TuneSettings = TuneSettings()
    evaluation: EvalConfig = EvalConfig()
    selection: SelectionConfig = SelectionConfig()

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if not self.references:
            raise ValueError("references: name at least one reference")
        for name in self.references:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"references: {name!r} is not usable as a directory name")
        trial_configs(self)  # every trial's settings obey PreferenceConfig's rules, before anything runs
        return self


class TrialSetup(Config):
    """What every trial receives (through `tune.with_parameters`): the shared inputs and, per grid point,
    its validated settings. Fixed by the config, so a restored experiment gets the same."""

    model_path: str = Field(description="the policy's initial model, resolved to a local directory")
    pad_id: int = Field(description="the tokenizer's padding id")
    prepared_dir: str = Field(description="prepared/<reference>/{train,eval}.jsonl")
    train_dir: str = Field(description="the trials' Ray Train runs")
    models_dir: str = Field(description="each trial's exported model, models/<trial id>")
    trials: dict[str, PreferenceConfig] = Field(description="point_key(point) -> that trial's settings")


def point_key(point: dict[str, Any]) -> str:
    """A grid point's name, e.g. `sft/sigmoid/beta=0.1/seed=0`."""
    return f"{point['reference']}/{point['loss_type']}/beta={point['beta']:g}/seed={point['seed']}"


def trial_configs(cfg: SweepConfig) -> dict[str, PreferenceConfig]:
    """`point_key -> PreferenceConfig` for every grid point: one template (model, data, dpo, train) with the
    point's β, loss type, seed and reference. `model_copy` does not validate, so each trial's settings are
    validated as a whole here, with every rule of `PreferenceConfig` (e.g. label smoothing only for the
    sigmoid and robust losses); a broken point raises ValueError naming it."""
    template = PreferenceConfig(
        method="dpo",
        model=cfg.model,
        output_dir=cfg.output_dir,
        data=cfg.data,
        dpo=cfg.dpo,
        train=cfg.train,
        precompute=cfg.precompute,
    )
    trials = {}
    for point in grid_points(cfg):
        trial = template.model_copy(
            update={
                "dpo": template.dpo.model_copy(
                    update={"beta": point["beta"], "loss_type": point["loss_type"]}
                ),
                "train": template.train.model_copy(update={"seed": point["seed"]}),
                "reference": cfg.references[point["reference"]],
            }
        )
        try:
            trials[point_key(point)] = PreferenceConfig.model_validate(trial.model_dump())
        except ValidationError as err:
            reasons = "; ".join(e["msg"] for e in err.errors())
            raise ValueError(f"grid point {point_key(point)}: {reasons}") from None
    return trials


def grid_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every trial's point {beta, seed, loss_type, reference}, in grid order."""
    points = []
    for ref_name, ref in cfg.references.items():
        stronger = ref.kind == "model" and ref.model is not None and ref.model != cfg.model
        if ref.kind == "posterior":  # reference-free needs a large β: small ones barely train
            betas = sorted(set(cfg.grid.posterior_betas))
        else:
            extra = cfg.grid.stronger_reference_betas if stronger else ()
            betas = sorted(set(cfg.grid.betas) | set(extra))
        for loss_type in cfg.grid.loss_types:
            for beta in betas:
                for seed in cfg.grid.seeds:
                    points.append({"beta": beta, "seed": seed, "loss_type": loss_type, "reference": ref_name})
    return points


def prepare(cfg: SweepConfig, out: Path) -> dict[str, Any]:
    """Tokenise the pairs and compute each reference's log-probs once; writes `prepared/<ref>/{train,eval}.jsonl`.

    Returns the data stats plus `model_path`, `pad_id` and the held-out `prompts` (for the evaluation stage).
    """
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(EngineConfig(model=model_path))
    train_ex, eval_ex, errors, stats = load_splits(cfg.data, "preference", tokenizer)
    write_errors(errors, out)
    for name, ref in cfg.references.items():
        target = out / "prepared" / name
        # Both splits in one scoring pass (one Ray Data job, one cache entry).
        train_values, eval_values = split_values(
            reference_values(train_ex + eval_ex, ref, model_path, tokenizer, cfg.precompute), len(train_ex)
        )
        target.mkdir(parents=True, exist_ok=True)
        for split, examples, values in (("train", train_ex, train_values), ("eval", eval_ex, eval_values)):
            rows = dpo_rows(examples, values)
            tmp = target / f"{split}.jsonl.tmp"
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            tmp.replace(target / f"{split}.jsonl")
    return {
        **stats,
        "model_path": model_path,
        "pad_id": tokenizer.pad_token_id,
        "prompts": [e.prompt for e in eval_ex],
    }


class SweepDPOTask(DPOTask):
    """DPO with one extra held-out metric: `kl_proxy`, the mean over chosen and rejected responses of
    ½·(log πθ(y|x) − log π_ref(y|x))², summed over the response's tokens (nats²).

    It is Schulman's k2 estimator applied to the data's responses rather than to samples of the policy, so it
    is not the KL itself; it is 0 exactly when the policy agrees with the reference on the data, grows with the
    drift in either direction, and, unlike the DPO loss, means the same thing at every β.
    """

    def eval_metrics(self, model, batch):
        metrics = super().eval_metrics(model, batch)
        metrics["kl_proxy"] = 0.25 * (metrics["logratio/chosen"] ** 2 + metrics["logratio/rejected"] ** 2)
        return metrics


class MarkForwarded(UserCallback):
    """Touches `marker` when the Train run reports, which the trial reads back after `fit` to learn whether
    this attempt forwarded anything to Tune. (Runs on the Train controller, so a file on the sweep's shared
    storage is how it answers the trial's driver.)"""

    def __init__(self, marker: str):
        self.marker = marker

    def after_report(self, run_context, metrics, checkpoint) -> None:
        Path(self.marker).touch()


def dpo_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune trial driver: train one grid point with `fit`, forwarding every report to Tune.

    `config = {"point": {beta, seed, loss_type, reference}}` (the grid Tune searches; it names the trial's
    directory and params.json); the point's settings are `setup.trials[point_key(point)]`. The Train run is
    named after the trial id, which a restored experiment keeps, so a resumed trial resumes its training from
    its last checkpoint.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    point = config["point"]
    settings = setup.trials[point_key(point)]
    trial_id = tune.get_context().get_trial_id()
    prepared = Path(setup.prepared_dir) / point["reference"]
    rows = {
        split: [json.loads(line) for line in (prepared / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "eval")
    }
    task = SweepDPOTask(
        setup.model_path,
        setup.pad_id,
        rows["train"],
        rows["eval"],
        seed=settings.train.seed,
        dpo=settings.dpo,
    )
    marker = Path(setup.train_dir) / ".forwarded" / f"{trial_id}-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    result = fit(
        task,
        settings.train,
        storage_path=setup.train_dir,
        name=f"train-{trial_id}",
        export_dir=Path(setup.models_dir) / trial_id,
        callbacks=[TuneReportCallback(), MarkForwarded(str(marker))],
    )
    if not marker.exists():
        # The Train run had finished before this attempt (the sweep was stopped after the run's last report
        # but before Tune recorded the trial as done), so it resumed at its end and reported nothing; a
        # restored trial starts with an empty Tune record, so hand Tune the run's whole history.
        for metrics in result.history:
            tune.report(metrics)
    marker.unlink(missing_ok=True)


def run_tuner(cfg: SweepConfig, out: Path, prep: dict[str, Any]):
    """Run (or restore and finish) the Tune experiment under `out/tune`; returns the `ResultGrid`."""
    from ray import tune

    # The setup is the same for every trial and fixed by the config (check_resumable), so it travels as a
    # parameter rather than in each trial's config; a restore re-specifies it, as Tune requires.
    setup = TrialSetup(
        model_path=prep["model_path"],
        pad_id=prep["pad_id"],
        prepared_dir=str(out / "prepared"),
        train_dir=str(out / "train"),
        models_dir=str(out / "models"),
        trials=trial_configs(cfg),
    )
    trainable = tune.with_resources(
        tune.with_parameters(dpo_trial, setup=setup), {"CPU": cfg.tune.cpus_per_trial}
    )
    experiment = out / EXPERIMENT
    if tune.Tuner.can_restore(str(experiment)):
        log.info("restoring the sweep in %s: finished trials are kept", experiment)
        return tune.Tuner.restore(str(experiment), trainable, resume_errored=True).fit()
    log.info("running %d trials in %s", len(setup.trials), experiment)
    tuner = tune.Tuner(
        trainable,
        param_space={"point": tune.grid_search(grid_points(cfg))},
        tune_config=tune.TuneConfig(
            scheduler=make_scheduler(cfg), max_concurrent_trials=cfg.tune.max_concurrent_trials
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(out),
            callbacks=_logger_callbacks(cfg.tune),
            failure_config=tune.FailureConfig(max_failures=cfg.tune.trial_retries),
        ),
    )
    return tuner.fit()


def make_scheduler(cfg: SweepConfig):
    """FIFO (every trial runs to the end) or ASHA on `tune.asha_metric` per training report, maximised."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.tune.scheduler == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        metric=cfg.tune.asha_metric,
        mode="max",
        time_attr="training_iteration",
        # A Tune iteration is one training report: at most one per optimizer step.
        max_t=max(1, cfg.train.max_steps or 10**6),
        grace_period=cfg.tune.asha_grace_period,
        reduction_factor=cfg.tune.asha_reduction_factor,
    )


def _logger_callbacks(settings: TuneSettings) -> list[Any]:
    """TensorBoard (events next to each trial's result.json) always; MLflow when a tracking URI is set."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    callbacks = [JsonLoggerCallback(), CSVLoggerCallback(), TBXLoggerCallback()]
    if settings.mlflow_tracking_uri:
        try:
            import mlflow  # noqa: F401  (the callback imports it lazily; fail before the sweep starts)
            from ray.air.integrations.mlflow import MLflowLoggerCallback
        except ImportError as err:
            raise ImportError(
                "tune.mlflow_tracking_uri is set but mlflow is not installed: pip install mlflow"
            ) from err
        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=settings.mlflow_tracking_uri, experiment_name=settings.mlflow_experiment
            )
        )
    return callbacks


class SweepConflict(InputError):
    """`output_dir` holds a sweep with other training settings than the config's."""


def restore_fields(cfg: SweepConfig) -> dict[str, Any]:
    """The config a restored experiment must agree on: all of it but `RESTORE_FREE`."""
    return {k: v for k, v in dump_config(cfg).items() if k not in RESTORE_FREE}


def check_resumable(cfg: SweepConfig) -> None:
    """Refuse a rerun into an `output_dir` whose `sweep.json` records other training settings: restoring
    would silently finish the *old* grid. Evaluation and selection settings may change freely."""
    out = Path(cfg.output_dir).resolve()
    path = out / "sweep.json"
    if not path.is_file():
        return
    before, current = json.loads(path.read_text()), restore_fields(cfg)
    changed = sorted(k for k in before.keys() | current.keys() if before.get(k) != current.get(k))
    if changed:
        raise SweepConflict(
            f"{out} holds a sweep with different {', '.join(changed)}; rerunning it would restore that "
            "sweep. Use another output_dir for a new sweep (or delete this one)."
        )


def check(cfg: SweepConfig) -> None:
    """Before Ray starts or a model loads: the data and models exist, and `output_dir` holds no other sweep."""
    require_path(cfg.data.train, "data.train")
    require_path(cfg.data.eval, "data.eval")
    require_model(cfg.model, "model")
    for name, ref in cfg.references.items():
        require_model(ref.model, f"references.{name}.model")
    if cfg.evaluation.enabled:
        require_model(cfg.evaluation.judge.engine.model, "evaluation.judge.engine.model")
    check_resumable(cfg)


def trial_rows(result_grid) -> list[dict[str, Any]]:
    """One row per trial from a `ResultGrid`: its grid point, status and last held-out metrics.

    Held-out metrics are reported only on evaluation steps, so each is the last value the trial reported.
    """
    rows = []
    for result in result_grid:
        point = (result.config or {}).get("point", {})
        history = result.metrics_dataframe
        metrics = dict(result.metrics or {})
        row: dict[str, Any] = {
            "trial_id": metrics.get("trial_id") or Path(result.path).name,
            **{k: point.get(k) for k in ("beta", "seed", "loss_type", "reference")},
            "status": "ok" if result.error is None else "error",
            "error": None if result.error is None else str(result.error).splitlines()[0][:300],
        }
        for key, col in TRAIN_COLUMNS.items():
            value = None
            if history is not None and key in history:
                reported = history[key].dropna()
                value = float(reported.iloc[-1]) if len(reported) else None
            row[col] = value
        row["nonfinite_metrics"] = sorted(
            k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)
        )
        rows.append(row)
    return rows


def run(cfg: SweepConfig) -> Result:
    """The whole sweep on the current Ray cluster (see the module doc); the summary is also `summary.json`.
    Rerunning with the same `output_dir` restores and finishes an interrupted sweep."""
    # Before the run record: a refused rerun must not overwrite the existing sweep's run.json.
    check_resumable(cfg)
    with Workflow("sweep_beta", cfg, cfg.output_dir) as wf:
        out = wf.output_dir.resolve()
        if not (out / "sweep.json").is_file():
            write_json(out / "sweep.json", restore_fields(cfg))
        with wf.phase("prepare"):
            log.info("tokenising the pairs and scoring %d reference(s)", len(cfg.references))
            prep = prepare(cfg, out)
        with wf.phase("trials"):
            grid = run_tuner(cfg, out, prep)
            # Markers of attempts that were killed before they could remove theirs.
            shutil.rmtree(out / "train" / ".forwarded", ignore_errors=True)
            rows = trial_rows(grid)
        with wf.phase("evaluation"):
            evals = _evaluate(cfg, out, prep, rows)
        with wf.phase("report"):
            summary = _report(cfg, out, prep, rows, evals)
        chosen = summary["chosen"]
        verdict = (
            f"use beta={chosen['beta']:g} ({chosen['metric']}={chosen['value']:.3f})"
            if chosen["beta"]
            else f"no beta chosen: {chosen['rule']}"
        )
        return wf.finish(
            summary,
            f"sweep done: {summary['trials']} trials ({summary['errored']} errored, {summary['degenerate']} "
            f"degenerate); {verdict} -> {out / 'report.md'}",
        )


def _evaluate(
    cfg: SweepConfig, out: Path, prep: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The post-sweep evaluation stage in one Ray task: `{trial_id or "sft": metrics}` ({} when disabled)."""
    import ray

    models = {r["trial_id"]: str(out / "models" / r["trial_id"]) for r in rows}
    models = {t: p for t, p in models.items() if (Path(p) / "config.json").is_file()}
    if not cfg.evaluation.enabled or not models:
        return {}
    log.info("evaluating %d trained models against the starting model", len(models))
    stage = ray.remote(num_cpus=cfg.evaluation.num_cpus, num_gpus=cfg.evaluation.num_gpus)(evaluate_models)
    return ray.get(
        stage.remote(models, prep["model_path"], prep["prompts"], cfg.evaluation, str(out / "eval"))
    )


def _report(
    cfg: SweepConfig,
    out: Path,
    prep: dict[str, Any],
    rows: list[dict[str, Any]],
    evals: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Join trials and evaluation, flag degenerate trials, choose β; writes results.csv, report.md and plots."""
    baseline = evals.get(BASELINE, {})
    for row in rows:
        ev = evals.get(row["trial_id"], {})
        row.update(
            {
                k: ev.get(k)
                for k in (
                    "rejected_prompts",
                    "gen_length",
                    "gen_chars",
                    "repetition",
                    "hit_max_tokens",
                    "win_rate",
                    "lc_win_rate",
                    "preferences",
                    "judge_consistency",
                    "judged_games",
                )
            }
        )
        reasons = degeneration_reasons(
            train_metrics={k: float("nan") for k in row.pop("nonfinite_metrics")},
            mean_length=ev.get("gen_length"),
            baseline_mean_length=baseline.get("gen_length"),
            mean_repetition=ev.get("repetition"),
            baseline_mean_repetition=baseline.get("repetition"),
            max_repetition=cfg.evaluation.max_repetition,
            max_length_ratio=cfg.evaluation.max_length_ratio,
        )
        row["degenerate"] = bool(reasons)
        row["degenerate_reasons"] = "; ".join(reasons)

    table = results_table(rows)
    table.to_csv(out / "results.csv", index=False)
    selection = choose(table, cfg.selection)
    plot_metrics(out / "plots", table)
    context = {
        "model": cfg.model,
        "train_examples": prep["train_examples"],
        "eval_examples": prep["eval_examples"],
        "steps": cfg.train.max_steps or f"{cfg.train.epochs} epoch(s)",
        "scheduler": cfg.tune.scheduler,
        "sft": baseline,
    }
    write_report(out, table, selection, context)
    return {
        "chosen": {
            "beta": selection.beta,
            "loss_type": selection.loss_type,
            "reference": selection.reference,
            "metric": selection.metric,
            "value": selection.value,
            "rule": selection.rule,
        },
        "trials": len(rows),
        "errored": int((table["status"] != "ok").sum()) if len(table) else 0,
        "degenerate": int(table["degenerate"].sum()) if len(table) else 0,
        "sft": baseline,
        "data": {k: prep[k] for k in ("rows_read", "train_examples", "eval_examples", "errors")},
        "experiment_path": str(out / EXPERIMENT),
    }
