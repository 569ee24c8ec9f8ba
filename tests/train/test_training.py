"""Training on a real local Ray cluster with DeepSpeed (CPU, gloo): DPO learning through the workflow with its
summary and curves (the other preference configs are submitted in tests/test_tour.py), kill-and-resume with ZeRO-3
and the HF export, the job shells' input checks."""

import json
import os
import sys
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
    load_tokenizer,
)
from rayflow.train.loop import fit, shard_indices
from rayflow.train.preference import PreferenceConfig, run
from rayflow.train.preference_data import load_splits
from rayflow.train.sft import SFTConfig, SFTTask
from tests.conftest import REPO
from tests.train import conftest as train_conftest
from tests.train.conftest import wait_for_registered_checkpoint

# The crash-injecting task below lives in this test module: ship it (and its helper) to the workers by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(train_conftest)


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
def test_dpo_learns_through_the_workflow(ray_session, tiny_models, pref_data, tmp_path):
    """DPO through the workflow learns on 2 workers with ZeRO-2. The other shipped preference configs, WSPO's
    stages included, are submitted as jobs in tests/test_tour.py."""
    dpo = preference_config(
        "train_dpo", tmp_path, pref_data, f"model={tiny_models['tiny']}",
        "train.max_steps=24", "train.eval_every=6", "train.checkpoint_every=0", "train.lr=1e-3",
        "train.ray_reports=with_checkpoints",  # history and TensorBoard still get every step
    )  # fmt: skip
    assert dpo.train.num_workers == 2 and dpo.train.zero_stage == 2
    check_dpo_learned(dpo, run(dpo))


def check_dpo_learned(cfg: PreferenceConfig, result) -> None:
    """The tiny model learned that "Sure." beats "No." on prompts it never saw; the workflow's outputs."""
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
    """Rank 1 dies (os._exit) at its 5th training micro-batch (step 5) of the first attempt, once Ray holds the
    step-4 checkpoint of the run in `run_dir`; every rank logs the first row of each training micro-batch it runs."""

    def __init__(self, *args, marker: str, log: str, run_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker, self.log, self.run_dir, self.calls = marker, log, run_dir, 0

    def compute_loss(self, model, batch):
        if model.module.training:  # the DeepSpeed engine's own flag never changes; its module's does
            import ray.train

            rank = ray.train.get_context().get_world_rank()
            self.calls += 1
            if rank == 1 and self.calls == 5 and not os.path.exists(self.marker):
                Path(self.marker).touch()
                # Die once Ray has registered the step-4 checkpoint, so that is the one to resume from.
                wait_for_registered_checkpoint(self.run_dir, 4)
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
        str(tiny_model), tok.pad_token_id, rows, eval_rows,
        marker=str(tmp_path / "crashed"), log=str(log), run_dir=str(tmp_path / "ray" / "crash"),
    )  # fmt: skip
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


def test_training_jobs_check_their_inputs_before_ray_starts(tmp_path, capsys, rayflow_logging):
    """A missing data file or model is one `error: <key>: ...` line and exit 2 from the job shell, before Ray
    starts (no Ray session here) or anything is written; a cross-field config error names the field."""
    from rayflow.config import ConfigError
    from rayflow.train import preference, sft
    from rayflow.train.omnibal import train as vlm
    from rayflow.workflow import job_main

    def never(cfg):
        raise AssertionError("run() was called")

    missing = tmp_path / "nope.jsonl"
    out = f"output_dir={tmp_path / 'out'}"
    for module, cls, argv, key in (
        (sft, sft.SFTConfig, [f"data.train={missing}"], "data.train"),
        (preference, PreferenceConfig, ["method=wspo", f"wspo.weak_sft_data={missing}"], "wspo.weak_sft_data"),
        (preference, PreferenceConfig, [f"model={tmp_path}/no-model"], "model"),
        (vlm, vlm.TrainVLMConfig, [f"data.path={missing}"], "data.path"),
    ):
        with pytest.raises(SystemExit) as exc:
            job_main(cls, never, [*argv, out], check=module.check)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith(f"error: {key}: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="label_smoothing"):
        load_config(PreferenceConfig, REPO / "configs/train_dpo.yaml",
                    ["dpo.loss_type=ipo", "dpo.label_smoothing=0.1"])  # fmt: skip
