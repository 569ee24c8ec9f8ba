"""The sweep's config, grid and resume guard (no Ray), and the job's command line."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from rayflow.config import ConfigError, load_config
from rayflow.tune.sweep import SweepConfig, SweepConflict, check_resumable, grid_points, make_scheduler
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
    assert len(points) == (5 + 7) * 3


def test_grid_sweeps_loss_types_and_references():
    cfg = SweepConfig(
        references={"sft": {}, "none": {"kind": "posterior"}},
        grid={"betas": [0.1], "seeds": [0, 1], "loss_types": ["sigmoid", "ipo"]},
    )
    points = grid_points(cfg)
    assert len(points) == 2 * 2 * 2
    assert {(p["reference"], p["loss_type"]) for p in points} == {
        (r, lt) for r in ("sft", "none") for lt in ("sigmoid", "ipo")
    }
    assert all(p["beta"] == 0.1 for p in points)  # only another *model* gets the stronger-reference betas


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="grid"):
        load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml", ["grid.betas=[0.1, -1]"])
    with pytest.raises(ConfigError, match="tune.scheduler"):
        load_config(SweepConfig, None, ["tune.scheduler=hyperband"])
    with pytest.raises(ValidationError, match="at least one reference"):
        SweepConfig(references={})
    with pytest.raises(ValidationError, match="directory name"):
        SweepConfig(references={"../up": {}})


def test_a_rerun_must_match_the_training_config(tmp_path):
    cfg = load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml", [f"output_dir={tmp_path}"])
    check_resumable(cfg, tmp_path)
    assert (tmp_path / "sweep.json").is_file()
    check_resumable(cfg, tmp_path)  # same sweep: restore it
    # Evaluation and selection may change between runs: they run after the trials.
    check_resumable(
        cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"max_prompts": 3})}), tmp_path
    )
    changed = load_config(
        SweepConfig, REPO / "configs" / "sweep_beta.yaml", [f"output_dir={tmp_path}", "grid.betas=[0.5]"]
    )
    with pytest.raises(SweepConflict, match="different grid"):
        check_resumable(changed, tmp_path)


def test_job_help_bad_override_and_conflicting_rerun(tmp_path):
    proc = subprocess.run(
        [sys.executable, "jobs/sweep_beta.py", "--help"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    for field in ("grid.betas", "tune.scheduler", "evaluation.judge.mode", "selection.metric"):
        assert field in proc.stdout
    proc = subprocess.run(
        [sys.executable, "jobs/sweep_beta.py", "--config", "configs/sweep_beta.yaml", "grid.betas=many"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "grid.betas" in proc.stderr and "Traceback" not in proc.stderr
    # A rerun into a sweep directory with another grid is refused before anything starts or is overwritten.
    check_resumable(load_config(SweepConfig, REPO / "configs" / "sweep_beta.yaml"), tmp_path)
    (tmp_path / "run.json").write_text("{}")
    proc = subprocess.run(
        [
            sys.executable,
            "jobs/sweep_beta.py",
            "--config",
            "configs/sweep_beta.yaml",
            f"output_dir={tmp_path}",
            "grid.seeds=[0, 1]",
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "different grid" in proc.stderr and "Traceback" not in proc.stderr
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
