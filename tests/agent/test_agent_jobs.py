"""The two TestAgent workflows on the shared local Ray session: policy training fanned out as Ray tasks (the
same policy as one process computes: seeds are fixed per session), and agent_eval over the shipped handbook
with two tiny targets on the engine stage, its reports, and a rerun that finds every session done."""

import json

import numpy as np
import pytest

from rayflow.agent.training import SeparationConfig, TrainPolicyConfig, train_policy
from rayflow.agent.training import run as train
from rayflow.config import load_config
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_training_on_ray_matches_one_process(ray_session, tmp_path):
    cfg = TrainPolicyConfig(output_dir=str(tmp_path / "train"), rounds=2, sessions_per_round=12, workers=2,
                            evaluation=SeparationConfig(pairs=10, max_turns=20))  # fmt: skip
    result = train(cfg)
    saved = json.loads((tmp_path / "train/policy.json").read_text())
    local, curve = train_policy(cfg.model_copy(update={"workers": 1}))
    assert np.allclose(saved["A"], local.A) and np.allclose(saved["b"], local.b)
    assert result.summary["rewards"] == pytest.approx(curve)
    assert set(result.summary["separation"]) == {"learned", "random", "fixed"}
    assert (tmp_path / "train/curve.png").stat().st_size > 0
    assert json.loads((tmp_path / "train/run.json").read_text())["status"] == "ok"


def test_agent_eval_over_the_handbook_and_a_rerun(ray_session, tmp_path):
    from rayflow.agent.evaluation import AgentEvalConfig, run

    cfg = load_config(AgentEvalConfig, REPO / "configs/agent_eval.yaml",
                      [f"output_dir={tmp_path / 'eval'}", "max_items=2", "turns=2", "stage.cpus_per_actor=0.5"])  # fmt: skip
    result = run(cfg)
    out = tmp_path / "eval"
    assert result.summary["sessions"] == 4 and result.summary["failed_sessions"] == 0
    assert set(result.summary["scores"]) == {"tiny-tiny", "tiny-small"}
    report = (out / "report.md").read_text()
    assert report.startswith("# TestAgent: comparative report") and "| tiny-small | 2 | 4 |" in report
    assert "## Target: tiny-tiny" in report and (out / "targets.png").stat().st_size > 0
    assert (out / "reports/target-01.md").read_text().startswith("# TestAgent report: tiny-small")
    assert len((out / "benchmark.jsonl").read_text().splitlines()) == 2
    again = run(cfg)
    assert again.summary["resumed_or_run"] == 0 and again.summary["scores"] == result.summary["scores"]
