"""OmniBal training for real: the job in pipeline mode, data-parallel ZeRO on the shared loop, step-count checks.

Heavy (Ray + DeepSpeed): run under the shared lock, e.g.
`flock /tmp/rayflow-heavy.lock .venv/bin/python -m pytest tests/train/omnibal -q -p no:cacheprovider`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from rayflow.train.omnibal.schedule import check_equal_steps
from tests.conftest import REPO, free_port


def _count_worker(rank: int, port: int, counts: list[int], results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(counts))
    try:
        check_equal_steps(counts[rank])
        results.put((rank, "ok"))
    except RuntimeError as err:
        results.put((rank, str(err)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("counts", [[7, 7], [7, 6]])
def test_step_count_all_reduce_catches_a_mismatch_on_every_rank(counts):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    mp.start_processes(_count_worker, args=(free_port(), counts, results), nprocs=2, start_method="spawn")
    out = dict(results.get(timeout=30) for _ in range(2))
    if counts[0] == counts[1]:
        assert out == {0: "ok", 1: "ok"}
    else:
        assert all("step counts differ" in msg and "min 6, max 7" in msg for msg in out.values())


@pytest.mark.slow
def test_job_trains_the_tiny_vlm_in_pipeline_mode_with_the_searched_partition(tmp_path):
    out = tmp_path / "vlm"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([sys.executable, "jobs/train_vlm.py", "--config", "configs/train_vlm.yaml",
                           f"output_dir={out}", "train.max_steps=6"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok"
    plan = json.loads((out / "plan.json").read_text())
    pipe = plan["pipeline"]
    # Deterministic from the committed profile: the same boundaries on every machine.
    assert pipe["partition"] == "searched" and plan["partition_search"]["method"] == "exhaustive"
    assert pipe["parts"][0] == 0 and pipe["parts"][-1] == 11 and pipe["fits_memory"]
    assert max(pipe["stage_peak_mb"]) <= 40
    # The 40 MB budget forces recompute on the first stage (two micro-batches in flight), not the last.
    assert "full" in pipe["stage_recompute"][0] or "selective" in pipe["stage_recompute"][0]
    assert set(pipe["stage_recompute"][1]) == {"none"}
    assert plan["balance"]["pad"] == 0.0 and plan["balance"]["max_mean"] <= 1.05
    stats = json.loads((out / "stats.json").read_text())
    assert stats["final"]["step"] == 6 and stats["final"]["loss"] < 6.5  # starts at ln(1025) ~ 6.93

    from rayflow.train.omnibal.tiny_vlm import TinyVLM

    model = TinyVLM.from_pretrained(out / "hf")
    assert sum(p.numel() for p in model.parameters()) > 1e6 and (out / "hf" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_two_worker_zero_run_has_equal_steps_and_learns(ray_session, tmp_path):
    from transformers import AutoTokenizer

    from rayflow.config import load_config
    from rayflow.llm import resolve_model
    from rayflow.train.omnibal.train import TrainVLMConfig, load_samples, plan_run, train_vlm

    cfg = load_config(TrainVLMConfig, REPO / "configs/train_vlm_zero.yaml",
                      ["train.max_steps=null", "train.epochs=2", "train.cpus_per_worker=0.5"])
    tokenizer_dir = resolve_model(cfg.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    vlm = cfg.vlm_config(tokenizer)
    index, samples, _ = load_samples(cfg, tokenizer, vlm)
    plan = plan_run(cfg, index, vlm)
    result = train_vlm(cfg, plan, samples, tokenizer_dir, storage_path=tmp_path / "ckpt", name="zero")
    history = result["history"]
    steps = plan.report["balance"]["steps"]
    # The shared loop all-reduces each rank's micro-batch count before training: a mismatch would fail the run.
    assert [h["step"] for h in history] == list(range(1, 2 * steps + 1))
    assert history[-1]["loss"] < history[0]["loss"] - 0.3  # 6.96 -> 6.50 here
