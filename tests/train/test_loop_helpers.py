"""The driver's pure parts: DeepSpeed config, LR schedule, per-rank sharding, lazy batches, metric reduction,
curves."""

import itertools

import pytest
import torch

from rayflow.config import ConfigError, load_config
from rayflow.train.loop import (
    LazyBatches,
    MetricAccumulator,
    TrainLoopConfig,
    deepspeed_config,
    eval_shard,
    lr_multiplier,
    plot_curves,
    shard_indices,
)


def test_deepspeed_config_from_typed_config():
    ds = deepspeed_config(
        TrainLoopConfig(
            micro_batch_size=3,
            grad_accum_steps=2,
            zero_stage=3,
            lr=2e-5,
            offload_optimizer=True,
            offload_params=True,
        ),
        world_size=4,
    )
    assert ds["train_batch_size"] == 24 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu"},
        "offload_param": {"device": "cpu"},
    }
    assert ds["optimizer"]["params"]["torch_adam"] is True and ds["optimizer"]["params"]["lr"] == 2e-5
    assert ds["zero_force_ds_cpu_optimizer"] is False and ds["bf16"] == {"enabled": False}
    gpu = deepspeed_config(TrainLoopConfig(use_gpu=True, dtype="bfloat16", zero_stage=1), world_size=8)
    assert gpu["optimizer"]["params"]["torch_adam"] is False and gpu["bf16"]["enabled"]
    assert "zero_force_ds_cpu_optimizer" not in gpu


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="offload_params needs zero_stage 3"):
        TrainLoopConfig(zero_stage=2, offload_params=True)
    with pytest.raises(ConfigError, match="zero_stage"):
        load_config(TrainLoopConfig, overrides=["zero_stage=4"])


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedule_warms_up_then_decays(schedule):
    cfg = TrainLoopConfig(lr_schedule=schedule, warmup_ratio=0.2)
    f = [lr_multiplier(s, 10, cfg) for s in range(11)]
    assert f[0] < f[1] < f[2] == 1.0  # two warmup steps
    if schedule == "constant":
        assert f[-1] == 1.0
    else:
        assert f[-2] > f[-1] == pytest.approx(0.0) and all(a >= b for a, b in itertools.pairwise(f[2:]))


def test_shards_are_disjoint_equal_and_deterministic():
    world, mbs = 3, 4
    shards = [shard_indices(50, 2, r, world, mbs, seed=7) for r in range(world)]
    assert {len(s) for s in shards} == {4}  # 50 // 12 global steps, the same on every rank
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat)) == 48
    assert shards[1] == shard_indices(50, 2, 1, world, mbs, seed=7)
    assert shard_indices(50, 3, 1, world, mbs, seed=7) != shards[1]  # a new order each epoch
    ev = [eval_shard(10, r, world, mbs) for r in range(world)]
    assert sorted(i for s in ev for b in s for i in b) == list(range(10))


def test_metric_accumulator_weights_by_examples_and_sums_tokens():
    acc = MetricAccumulator()
    acc.add(
        {
            "acc": torch.tensor([1.0, 0.0, 1.0]),
            "loss": torch.tensor(2.0),
            "num_tokens": torch.tensor([3.0, 4.0]),
        }
    )
    acc.add({"acc": torch.tensor([1.0]), "loss": 4.0, "num_tokens": torch.tensor([5.0])})

    def fake_all_reduce(t):  # a second rank with the same numbers
        t.mul_(2)

    out = acc.reduce(fake_all_reduce)
    assert out == {"acc": 0.75, "loss": 3.0, "num_tokens": 24.0}
    assert acc.reduce() == {}


def test_lora_and_gradient_checkpointing_switches(tiny_model):
    """LoRA leaves only adapter weights trainable; checkpointing is switched on in the HF model."""
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from rayflow.train.loop import LoraSettings, _prepare_model

    cfg = TrainLoopConfig(lora=LoraSettings(r=4, alpha=8), gradient_checkpointing=True)
    model = _prepare_model(AutoModelForCausalLM.from_pretrained(tiny_model), cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.base_model.model.is_gradient_checkpointing
    merged = model.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())


def test_lazy_batches_collate_on_access_and_slice_lazily():
    collated = []

    def collate(group):
        collated.append(group)
        return sum(group)

    batches = LazyBatches([[1, 2], [3], [4, 5, 6]], collate)
    step = batches[1:3]
    assert len(batches) == 3 and len(step) == 2 and collated == []  # nothing collated yet
    assert list(step) == [3, 15] and collated == [[3], [4, 5, 6]]


def test_curve_png_from_history(tmp_path):
    history = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7, "eval/loss": 0.8}, {"step": 3, "loss": 0.5}]
    path = plot_curves(history, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_curves([{"step": 1, "lr": 0.1}], tmp_path / "none.png") is None  # nothing to draw
    assert not (tmp_path / "none.png").exists()


def test_workers_put_the_ninja_beside_their_python_first_on_path(tmp_path, monkeypatch):
    from rayflow.train import loop

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(loop.sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    loop._prefer_own_ninja()
    assert loop.os.environ["PATH"] == "/usr/bin:/bin"  # no ninja of its own: the system's is all there is
    (bin_dir / "ninja").write_text("")
    loop._prefer_own_ninja()
    loop._prefer_own_ninja()
    assert loop.os.environ["PATH"] == f"{bin_dir}:/usr/bin:/bin"  # first, and once
