"""The sweep's config, grid, typed trial settings, input checks and resume guard (no Ray), and the job's command
line."""

import runpy
import sys

import pytest
from pydantic import ValidationError

from rayflow.config import ConfigError, load_config
from rayflow.runinfo import write_json
from rayflow.train.preference import PreferenceConfig
from rayflow.tune.sweep import (
    SweepConfig,
    SweepConflict,
    check,
    grid_points,
    make_scheduler,
    point_key,
    restore_fields,
    trial_configs,
)
from rayflow.workflow import InputError
from tests.conftest import REPO


def test_shipped_configs_load_and_span_their_grids():
    offline = load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml")
    points = grid_points(offline)
    assert [(p["beta"], p["seed"]) for p in points] == [(0.02, 0), (0.1, 0)]  # 2 betas x 1 seed
    assert offline.tune.scheduler == "fifo" and offline.evaluation.enabled

    full = load_config(SweepConfig, REPO / "configs" / "sweep_beta_full.yaml")
    points = grid_points(full)
    own = sorted({p["beta"] for p in points if p["reference"] == "sft"})
    stronger = sorted({p["beta"] for p in points if p["reference"] == "stronger"})
    assert own == [0.005, 0.01, 0.02, 0.05, 0.1]  # RefDPO's grid
    assert stronger == own + [1.0, 10.0]  # a stronger reference moves the best β up to ~1
    posterior = sorted({p["beta"] for p in points if p["reference"] == "posterior"})
    assert posterior == [1.0, 10.0, 100.0]  # reference-free: RefDPO's best was β = 100
    assert len(points) == (5 + 7 + 3) * 3


def test_grid_sweeps_loss_types_and_references():
    cfg = SweepConfig(
        references={"sft": {}, "none": {"kind": "posterior"}},
        grid={"betas": [0.1], "seeds": [0, 1], "loss_types": ["sigmoid", "ipo"]},
    )
    points = grid_points(cfg)
    assert len(points) == 1 * 2 * 2 + 3 * 2 * 2  # seeds x loss types; the posterior reference has 3 betas
    assert {(p["reference"], p["loss_type"]) for p in points} == {
        (r, lt) for r in ("sft", "none") for lt in ("sigmoid", "ipo")
    }
    # Only another *model* gets the stronger-reference betas; the posterior one gets posterior_betas only.
    assert {p["beta"] for p in points if p["reference"] == "sft"} == {0.1}
    assert {p["beta"] for p in points if p["reference"] == "none"} == {1.0, 10.0, 100.0}


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="grid"):
        load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml", ["grid.betas=[0.1, -1]"])
    with pytest.raises(ConfigError, match="tune.scheduler"):
        load_config(SweepConfig, None, ["tune.scheduler=hyperband"])
    with pytest.raises(ValidationError, match="at least one reference"):
        SweepConfig(references={})
    with pytest.raises(ValidationError, match="directory name"):
        SweepConfig(references={"../up": {}})


def test_trials_get_typed_validated_settings_from_one_template():
    cfg = load_config(
        SweepConfig, REPO / "configs" / "sweep_beta.yaml", ["grid.seeds=[0, 3]", "dpo.label_smoothing=0.1"]
    )
    trials = trial_configs(cfg)
    assert list(trials) == [point_key(p) for p in grid_points(cfg)]
    assert list(trials)[:2] == ["sft/sigmoid/beta=0.02/seed=0", "sft/sigmoid/beta=0.02/seed=3"]
    trial = trials["sft/sigmoid/beta=0.1/seed=3"]
    assert isinstance(trial, PreferenceConfig)
    assert (trial.dpo.beta, trial.dpo.loss_type, trial.train.seed) == (0.1, "sigmoid", 3)
    # Everything else is the template's: the sweep's model, data, DPO and training settings.
    assert trial.dpo.label_smoothing == 0.1 and trial.model == cfg.model and trial.data == cfg.data
    assert (
        trial.train.model_copy(update={"seed": 0}) == cfg.train and trial.reference == cfg.references["sft"]
    )
    # PreferenceConfig's own rules hold for every trial, checked when the config is read, naming the point.
    with pytest.raises(ConfigError, match=r"grid point sft/ipo/beta=0.02/seed=0: .*label_smoothing"):
        load_config(
            SweepConfig,
            REPO / "configs" / "sweep_beta.yaml",
            ["dpo.label_smoothing=0.1", "grid.loss_types=[sigmoid, ipo]"],
        )


def test_a_rerun_must_match_the_training_config(tmp_path):
    cfg = load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml", [f"output_dir={tmp_path}"])
    check(cfg)  # no sweep there yet
    write_json(tmp_path / "sweep.json", restore_fields(cfg))  # what `run` records
    check(cfg)  # same sweep: restore it
    # Evaluation and selection may change between runs: they run after the trials.
    check(cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"max_prompts": 3})}))
    changed = load_config(
        SweepConfig, REPO / "configs" / "sweep_beta.yaml", [f"output_dir={tmp_path}", "grid.betas=[0.5]"]
    )
    with pytest.raises(SweepConflict, match="different grid"):
        check(changed)


def test_missing_inputs_are_named():
    for override, key in (("data.train=/nope.jsonl", "data.train"), ("model=/no/model", "model")):
        with pytest.raises(InputError, match=f"^{key}: "):
            check(load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml", [override]))


def job(argv, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run jobs/sweep_beta.py in this process (no Ray may start: every case here ends before it would)."""
    monkeypatch.setattr(sys, "argv", ["sweep_beta.py", *argv])
    monkeypatch.setattr("ray.init", lambda *a, **k: pytest.fail("ray.init ran"))
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "jobs" / "sweep_beta.py"), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_job_help_no_arguments_bad_override_and_conflicting_rerun(tmp_path, monkeypatch, capsys):
    code, out, _ = job(["--help"], monkeypatch, capsys)
    assert code == 0
    for field in (
        "grid.betas",
        "dpo.label_smoothing",
        "tune.scheduler",
        "evaluation.judge.mode",
        "selection.metric",
    ):
        assert field in out
    code, _, err = job([], monkeypatch, capsys)  # the class defaults are no quick run: say how to start
    assert code == 2 and "usage:" in err and "--config" in err
    code, _, err = job(["--config", "configs/sweep_beta.yaml", "grid.betas=many"], monkeypatch, capsys)
    assert code == 2 and "grid.betas" in err and "Traceback" not in err
    # A rerun into a sweep directory with another grid is refused before anything starts or is overwritten.
    shipped = load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml", [f"output_dir={tmp_path}"])
    write_json(tmp_path / "sweep.json", restore_fields(shipped))
    (tmp_path / "run.json").write_text("{}")
    code, _, err = job(
        ["--config", "configs/sweep_beta.yaml", f"output_dir={tmp_path}", "grid.seeds=[0, 1]"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ") and "different grid" in err
    assert (tmp_path / "run.json").read_text() == "{}"


def test_fifo_by_default_asha_on_request():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    assert isinstance(make_scheduler(SweepConfig()), FIFOScheduler)
    asha = make_scheduler(
        load_config(
            SweepConfig, None, ["tune.scheduler=asha", "train.max_steps=40", "tune.asha_grace_period=5"]
        )
    )
    assert isinstance(asha, ASHAScheduler)
    # The raw margin h, maximised: comparable across β, unlike the loss.
    assert (asha.metric, asha._mode, asha._max_t) == ("h", "max", 40)
