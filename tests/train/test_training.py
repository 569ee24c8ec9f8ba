"""Training on a real local Ray cluster with DeepSpeed (CPU, gloo): shipped configs as smokes, learning through
the preference workflow (summary, curves), kill-and-resume with ZeRO-3 and the HF export, the job shells."""

import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cloudpickle
import pytest
import torch
from transformers import AutoModelForCausalLM

from rayflow.config import load_config
from rayflow.llm import (
    EngineConfig,
    SamplingParams,
    build_engine,
    build_tiny_model,
    load_tokenizer,
    train_tokenizer,
)
from rayflow.train.loop import fit, shard_indices
from rayflow.train.preference import PreferenceConfig, run, run_preference
from rayflow.train.preference_data import load_splits
from rayflow.train.sft import SFTConfig, SFTTask
from tests.conftest import REPO

# The crash-injecting task below lives in this test module: ship it to the workers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def preference_config(name: str, tmp_path: Path, pref_data, *overrides: str) -> PreferenceConfig:
    return load_config(
        PreferenceConfig,
        REPO / "configs" / f"{name}.yaml",
        [
            f"output_dir={tmp_path / name}",
            f"data.train={pref_data['train']}",
            f"data.eval={pref_data['eval']}",
            f"precompute.cache_dir={tmp_path / 'logps-cache'}",
            "precompute.cpus_per_actor=1",
            *overrides,
        ],
    )


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} from the TFRecord event files in `directory` (length, crc, event, crc)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (n,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + n])
            at += 12 + n + 4
            for v in event.summary.value:
                scalars.setdefault(v.tag, []).append((event.step, v.simple_value))
    return scalars


@pytest.mark.slow
def test_dpo_config_raises_held_out_reward_accuracy(ray_session, tiny_model, pref_data, tmp_path):
    """2 workers, ZeRO-2: the tiny model learns that "Sure." beats "No." on prompts it never saw."""
    cfg = preference_config(
        "train_dpo",
        tmp_path,
        pref_data,
        f"model={tiny_model}",
        "train.max_steps=24",
        "train.eval_every=6",
        "train.checkpoint_every=0",
        "train.lr=1e-3",
        "train.ray_reports=with_checkpoints",  # history and TensorBoard still get every step
    )
    assert cfg.train.num_workers == 2 and cfg.train.zero_stage == 2
    result = run(cfg)  # the workflow: run.json, summary.json and the run's artefacts
    stats = result.summary
    out = Path(cfg.output_dir)
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(stats))
    assert json.loads((out / "run.json").read_text())["status"] == "ok"
    # Curves: TensorBoard events from rank 0 with every logged step, and the PNG.
    scalars = tensorboard_scalars(Path(stats["tensorboard_dir"]))
    assert [step for step, _ in scalars["loss"]] == list(range(1, 25))
    assert [step for step, _ in scalars["eval/rewards/accuracies"]] == [6, 12, 18, 24]
    assert scalars["eval/loss"][-1][1] == pytest.approx(stats["final_metrics"]["eval/loss"], rel=1e-5)
    assert Path(stats["curve_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats["train_examples"] == 96 and stats["eval_examples"] == 32 and stats["errors"] == 4
    assert len((out / "errors" / "errors.jsonl").read_text().splitlines()) == 4
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    evals = [h for h in history if "eval/rewards/accuracies" in h]
    assert [h["step"] for h in evals] == [6, 12, 18, 24]
    first, last = evals[0], evals[-1]
    assert last["eval/rewards/accuracies"] >= 0.9
    assert last["eval/rewards/margins"] > first["eval/rewards/margins"] > 0
    assert last["eval/h"] > 0 and last["eval/loss"] < 0.6  # below ln 2, where it starts
    for key in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "perf/tokens_per_s"):
        assert key in history[0]
    # The exported model is a plain HF directory the engine layer loads, and it now prefers "Sure".
    engine = build_engine(EngineConfig(backend="hf", model=str(out / "model"), dtype="float32"))
    gen = engine.generate(["Tell me what Ivy did at the market."], SamplingParams(max_tokens=2))[0]
    assert gen.text.startswith("Sure")


class CrashOnce(SFTTask):
    """Rank 1 dies (os._exit) at its 5th training micro-batch (step 5) of the first attempt; every rank logs the
    first row of each training micro-batch it runs."""

    def __init__(self, *args, marker: str, log: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker, self.log, self.calls = marker, log, 0

    def compute_loss(self, model, batch):
        if model.module.training:  # the DeepSpeed engine's own flag never changes; its module's does
            import ray.train

            rank = ray.train.get_context().get_world_rank()
            self.calls += 1
            if rank == 1 and self.calls == 5 and not os.path.exists(self.marker):
                Path(self.marker).touch()
                # Ray registers a reported checkpoint at its next health check (every 2 s): die after that, so the
                # step-4 checkpoint is the one to resume from (a crash within 2 s resumes from the one before).
                time.sleep(5)
                os._exit(1)
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"rank": rank, "ids": batch["input_ids"][0].tolist()}) + "\n")
        return super().compute_loss(model, batch)


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_zero3_with_export(
    ray_session, tiny_model, pref_data, tmp_path
):
    cfg = load_config(
        SFTConfig,
        REPO / "configs" / "train_sft.yaml",
        [
            f"model={tiny_model}",
            f"data.train={pref_data['sft']}",
            "train.zero_stage=3",
            "train.max_steps=6",
            "train.checkpoint_every=2",
            "train.eval_every=0",
            "train.max_failures=1",
            "train.ray_reports=with_checkpoints",
        ],
    )
    tok = load_tokenizer(EngineConfig(model=str(tiny_model)))
    train, held, _, _ = load_splits(cfg.data, "response", tok)
    rows = [{"prompt_ids": e.prompt_ids, "response_ids": e.chosen_ids} for e in train]
    eval_rows = [{"prompt_ids": e.prompt_ids, "response_ids": e.chosen_ids} for e in held]
    log = tmp_path / "batches.jsonl"
    task = CrashOnce(
        str(tiny_model), tok.pad_token_id, rows, eval_rows, marker=str(tmp_path / "crashed"), log=str(log)
    )
    result = fit(task, cfg.train, storage_path=tmp_path / "ray", name="crash", export_dir=tmp_path / "model")

    assert (tmp_path / "crashed").exists()  # the crash really happened
    assert result.metrics["step"] == 6 and result.metrics["restarts"] == 1
    assert [h["step"] for h in result.history] == [1, 2, 3, 4, 5, 6]  # no step lost or repeated
    # Before the crash each rank ran steps 1-4 (rank 0 perhaps started step 5); after restarting from the step-4
    # checkpoint, steps 5 and 6 consume exactly the micro-batches an uninterrupted run would.
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    for rank in (0, 1):
        seen = [entry["ids"] for entry in logged if entry["rank"] == rank]
        plan = [
            task.make_batch([rows[i] for i in idx])["input_ids"][0].tolist()
            for epoch in (0, 1)  # 41 rows = 5 steps of 2 x 4: step 6 opens the second epoch
            for idx in shard_indices(
                len(rows), epoch, rank, 2, cfg.train.micro_batch_size, seed=cfg.train.seed
            )
        ]
        assert len(rows) // 8 == 5
        assert seen[:4] == plan[:4] and seen[-2:] == plan[4:6] and len(seen) in (6, 7)
    # The LR schedule came back with the optimizer: step 5's LR continues the cosine decay, no fresh warmup.
    lrs = [h["lr"] for h in result.history]
    assert lrs[3] > lrs[4] > lrs[5] and lrs[4] > 0

    # ZeRO-3 shards gathered into a full HF model that loads, with the tokenizer beside it.
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32).eval()
    assert (tmp_path / "model" / "tokenizer.json").exists()
    with torch.no_grad():
        _, metrics = SFTTask.compute_loss(task, model, task.make_batch(eval_rows))
    assert abs(metrics["nll"].mean().item() - result.metrics["eval/nll"]) < 1e-3  # = the workers' last eval


@pytest.mark.slow
def test_wspo_pipeline_config_runs_every_stage(ray_session, tiny_models, pref_data, tmp_path):
    cfg = preference_config(
        "train_wspo",
        tmp_path,
        pref_data,
        f"model={tiny_models['small']}",
        f"wspo.weak_base={tiny_models['tiny']}",
        f"wspo.weak_sft_data={pref_data['sft']}",
        "wspo.weak_sft_train.max_steps=2",
        "wspo.weak_dpo_train.max_steps=3",
        "wspo.weak_dpo_train.lr=5e-3",
        "train.max_steps=3",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        *(f"{t}.ray_reports=with_checkpoints" for t in ("train", "wspo.weak_sft_train", "wspo.weak_dpo_train")),
    )
    stats = run_preference(cfg)
    out = Path(cfg.output_dir)
    for stage in ("weak_sft", "weak_aligned"):
        assert (out / stage / "model" / "model.safetensors").exists()
        assert stats["stages"][stage]["final_metrics"]["step"] == (2 if stage == "weak_sft" else 3)
    assert stats["weak_models"]["weak_reference"] == str(out / "weak_sft" / "model")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    # At initialisation Δs = 0, so the loss is the weak shift alone: positive once the weak DPO moved the model.
    assert history[0]["wspo/delta_strong"] == pytest.approx(0.0, abs=1e-4)
    assert abs(history[0]["wspo/delta_weak"]) > 0 and history[0]["loss"] > 0
    assert "eval/wspo/scaled_gap" in history[-1]
    assert AutoModelForCausalLM.from_pretrained(out / "model").config.num_hidden_layers == 4  # the strong one


VARIANTS = ["train_ipo", "train_robust", "train_posterior", "train_likelihood", "train_stronger_reference"]


@pytest.mark.slow
def test_dpo_variant_configs_train(ray_session, tiny_models, pref_data, tmp_path):
    """Every shipped DPO-variant config trains a few steps on one worker (the 2-worker path is tested above).
    The runs go side by side on half a CPU each: a short run's time is mostly start-up waits, not compute."""
    # The stronger reference is another family with its own tokenizer (the shipped config pre-trains
    # tiny:small@100, a minute of CPU): only its per-sequence sums enter the loss.
    other_family = build_tiny_model(
        tmp_path / "qwen2-ref", size="small", arch="qwen2", seed=5, tokenizer=train_tokenizer(vocab_size=512)
    )
    cfgs = [
        preference_config(
            name,
            tmp_path,
            pref_data,
            f"model={tiny_models['tiny']}",
            "train.max_steps=2",
            "train.num_workers=1",
            "train.cpus_per_worker=0.5",
            "train.eval_every=0",
            "train.checkpoint_every=0",
            "precompute.cpus_per_actor=0.5",
            *([f"reference.model={other_family}"] if name == "train_stronger_reference" else []),
        )
        for name in VARIANTS
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(VARIANTS, pool.map(run_preference, cfgs)))
    for name, stats in results.items():
        final = stats["final_metrics"]
        assert final["step"] == 2 and torch.isfinite(torch.tensor(final["loss"])), name
        assert "eval/rewards/accuracies" in final, name
        assert (Path(stats["model_dir"]) / "model.safetensors").is_file(), name
    assert results["train_posterior"]["reference"]["cache"] is None  # nothing to score
    for name in ("train_ipo", "train_robust", "train_likelihood", "train_stronger_reference"):
        assert Path(results[name]["reference"]["cache"]).is_dir(), name
    # The policy's own model as reference: same cache entry for ipo and robust; likelihood scores without the
    # prompt, and the other family with its own tokens: entries of their own.
    caches = {name: results[name]["reference"]["cache"] for name in results if name != "train_posterior"}
    assert caches["train_ipo"] == caches["train_robust"]
    assert len({caches["train_ipo"], caches["train_likelihood"], caches["train_stronger_reference"]}) == 3
    # At step 1 the policy is its own reference in ipo/robust (h = 0), but not under the other references.
    first = {
        name: json.loads((Path(cfg.output_dir) / "history.jsonl").read_text().splitlines()[0])
        for name, cfg in zip(VARIANTS, cfgs)
    }
    assert first["train_ipo"]["h"] == pytest.approx(0.0, abs=1e-3)
    assert first["train_ipo"]["loss"] == pytest.approx((1 / (2 * 0.1)) ** 2, rel=1e-3)  # (0 - 1/(2β))²
    assert first["train_robust"]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert abs(first["train_stronger_reference"]["h"]) > 1e-2


def _job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, check=False, text=True, timeout=120
    )


def test_jobs_have_help_and_name_bad_keys_and_missing_inputs(tmp_path):
    for job, key in (
        ("train_preference", "dpo.loss_type"),
        ("train_sft", "train.zero_stage"),
        ("train_vlm", "pipeline_stages"),
    ):
        proc = _job(f"jobs/{job}.py", "--help")
        assert proc.returncode == 0 and key in proc.stdout
    proc = _job("jobs/train_preference.py", "--config", "configs/train_dpo.yaml", "dpo.loss_type=ipo",
                "dpo.label_smoothing=0.1")  # fmt: skip
    assert proc.returncode == 2 and "label_smoothing" in proc.stderr and "Traceback" not in proc.stderr
    # A missing input is one line naming the key, before Ray starts or any model is built.
    missing = tmp_path / "nope.jsonl"
    for args, key in (
        (("jobs/train_sft.py", f"data.train={missing}"), "data.train"),
        (("jobs/train_preference.py", "method=wspo", f"wspo.weak_sft_data={missing}"), "wspo.weak_sft_data"),
        (("jobs/train_vlm.py", f"data.path={missing}"), "data.path"),
        (("jobs/train_preference.py", f"model={tmp_path}/no-model"), "model"),
    ):
        proc = _job(*args, f"output_dir={tmp_path / 'out'}")
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {key}: "), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
