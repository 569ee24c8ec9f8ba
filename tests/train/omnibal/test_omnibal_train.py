"""OmniBal training for real through the one driver: a 2-stage x 2-replica pipeline killed and resumed, the
data-parallel ZeRO workflow end to end (the rank-count check itself: tests/train/test_rank_checks.py).

Heavy (Ray + DeepSpeed): run under the shared lock, e.g.
`flock /tmp/rayflow-heavy.lock .venv/bin/python -m pytest tests/train/omnibal -q -p no:cacheprovider`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cloudpickle
import pytest

from rayflow.config import load_config
from rayflow.train.loop import PipelineStrategy, fit
from rayflow.train.omnibal.train import (
    OmniBalTask,
    TrainVLMConfig,
    load_eval_samples,
    load_samples,
    plan_run,
    run,
)
from tests.conftest import REPO
from tests.train import conftest as train_conftest
from tests.train.conftest import wait_for_registered_checkpoint

# The crash-injecting task below lives in this test module: ship it (and its helper) to the workers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(train_conftest)


class CrashOnce(OmniBalTask):
    """The last rank (stage 1 of replica 1) dies as step 3 of the first attempt starts (evaluation runs at the
    end only, so the first 8 micro-batches fed to the pipeline are steps 1-2), once Ray holds the step-2
    checkpoint of the run in `run_dir`."""

    def __init__(self, *args, marker: str, run_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker, self.run_dir, self.calls = marker, run_dir, 0

    def pipeline_batch(self, batch):
        import ray.train

        ctx = ray.train.get_context()
        self.calls += 1
        last = ctx.get_world_rank() == ctx.get_world_size() - 1
        if last and self.calls == 2 * 4 + 1 and not os.path.exists(self.marker):
            Path(self.marker).touch()
            # Die once Ray has registered the step-2 checkpoint, so that is the one to resume from.
            wait_for_registered_checkpoint(self.run_dir, 2)
            os._exit(1)
        return super().pipeline_batch(batch)


@pytest.mark.slow
def test_pipeline_two_stages_two_replicas_killed_worker_resumes(ray_session, tmp_path):
    """2 stages x 2 replicas = 4 workers on half a CPU each, the planned partition, a worker killed after the
    step-2 checkpoint: the run resumes there, counts the restart, evaluates, and exports the whole model."""
    from transformers import AutoTokenizer

    from rayflow.llm import resolve_model

    cfg = load_config(
        TrainVLMConfig,
        REPO / "configs/train_vlm.yaml",
        [
            "train.num_workers=4",
            "train.cpus_per_worker=0.5",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "train.eval_every=0",
            "train.max_failures=1",
            "train.ray_reports=with_checkpoints",
            "data.eval_samples=8",
        ],
    )
    assert cfg.data_parallel == 2 and cfg.train.grad_accum_steps == 4
    tokenizer_dir = resolve_model(cfg.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    vlm = cfg.vlm_config(tokenizer)
    index, samples, _ = load_samples(cfg, tokenizer, vlm)
    eval_samples, _ = load_eval_samples(cfg, tokenizer, vlm)
    plan = plan_run(cfg, index, vlm)
    pipe = plan.report["pipeline"]
    # Deterministic from the committed profile: the same boundaries on every machine.
    assert pipe["partition"] == "searched" and plan.report["partition_search"]["method"] == "exhaustive"
    assert pipe["parts"][0] == 0 and pipe["parts"][-1] == 11 and pipe["fits_memory"]
    assert max(pipe["stage_peak_mb"]) <= 40
    # The 40 MB budget forces recompute on the first stage (two micro-batches in flight), not the last.
    assert "full" in pipe["stage_recompute"][0] or "selective" in pipe["stage_recompute"][0]
    assert set(pipe["stage_recompute"][1]) == {"none"}
    assert plan.report["balance"]["pad"] == 0.0

    task = CrashOnce(cfg, plan, samples, tokenizer_dir, eval_samples,
                     marker=str(tmp_path / "crashed"), run_dir=str(tmp_path / "ray" / "pipe"))  # fmt: skip
    result = fit(task, cfg.train, storage_path=tmp_path / "ray", name="pipe", export_dir=tmp_path / "hf",
                 strategy=PipelineStrategy(cfg.pipeline_stages))  # fmt: skip

    assert (tmp_path / "crashed").exists()  # the crash really happened
    assert result.metrics["step"] == 4 and result.metrics["restarts"] == 1
    assert [h["step"] for h in result.history] == [1, 2, 3, 4]  # no step lost or repeated
    assert [h["restarts"] for h in result.history] == [0, 0, 1, 1]
    assert result.history[-1]["loss"] < result.history[0]["loss"]  # starts at ln(1025) ~ 6.93
    assert 0 < result.metrics["eval/loss"] < 7 and result.metrics["eval/num_tokens"] > 0
    # The checkpoint layout of every strategy, and the curves.
    ckpt = Path(result.checkpoint_path)
    assert {p.name for p in ckpt.iterdir()} >= {"trainer_state.json", "history.jsonl", "deepspeed", "hf"}
    assert json.loads((ckpt / "trainer_state.json").read_text()) == {"step": 4, "total_steps": 4, "restarts": 1}
    assert any(Path(result.tensorboard_dir).glob("events.out.tfevents.*"))
    assert Path(result.curve_png).stat().st_size > 0

    from rayflow.train.omnibal.tiny_vlm import TinyVLM

    model = TinyVLM.from_pretrained(tmp_path / "hf")  # both stages' layers in one model
    assert sum(p.numel() for p in model.parameters()) > 1e6 and (tmp_path / "hf" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_zero_workflow_has_equal_steps_learns_and_writes_its_outputs(ray_session, tmp_path):
    """The VLM workflow (`run`) in data-parallel ZeRO mode: plan, train two epochs, summary and artefacts."""
    out = tmp_path / "vlm"
    cfg = load_config(TrainVLMConfig, REPO / "configs/train_vlm_zero.yaml",
                      [f"output_dir={out}", "train.max_steps=null", "train.epochs=2",
                       "train.cpus_per_worker=0.5", "data.eval_samples=8",
                       "train.ray_reports=with_checkpoints"])  # fmt: skip
    result = run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert json.loads((out / "run.json").read_text())["status"] == "ok"
    history = [json.loads(x) for x in (Path(summary["checkpoint"]) / "history.jsonl").read_text().splitlines()]
    steps = json.loads((out / "plan.json").read_text())["balance"]["steps"]
    # The driver all-reduces each rank's micro-batch count before training: a mismatch would fail the run.
    assert [h["step"] for h in history] == list(range(1, 2 * steps + 1))
    assert history[-1]["loss"] < history[0]["loss"] - 0.3  # 6.96 -> 6.50 here
    assert summary["final_metrics"]["step"] == 2 * steps and "eval/loss" in summary["final_metrics"]
    assert Path(summary["curve_png"]).is_file() and Path(summary["tensorboard_dir"]).is_dir()
    assert (out / "hf" / "config.json").is_file() and summary["model_dir"] == str(out / "hf")
