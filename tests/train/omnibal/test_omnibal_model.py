"""The tiny VLM, its data, the length index and the committed cost profile (no Ray, no DeepSpeed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from rayflow.llm import resolve_model
from rayflow.train.omnibal.costmodel import CostProfile
from rayflow.train.omnibal.index import LengthIndex, read_jsonl_index
from rayflow.train.omnibal.pipeline import pipeline_state_to_model, wrap_layers
from rayflow.train.omnibal.synthetic import image_text_samples
from rayflow.train.omnibal.tiny_vlm import TinyVLM, TinyVLMConfig, layer_kinds
from rayflow.train.omnibal.train import DEFAULT_PROFILE, TrainVLMConfig
from rayflow.train.omnibal.vlm_data import VLMData


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("tiny:tiny"))


@pytest.fixture(scope="module")
def vlm(tokenizer) -> TinyVLMConfig:
    return TrainVLMConfig().vlm_config(tokenizer)


def test_index_matches_what_collate_builds(tokenizer, vlm):
    samples = image_text_samples(30, seed=2, skew=3.0)
    data = VLMData(samples, tokenizer, vlm)
    index = data.index()
    for i in range(len(samples)):
        batch = data.collate(np.array([i]))
        assert len(batch["input_ids"]) == index.tok[i]
        assert len(batch["pixels"]) == index.vit[i]  # text-only samples carry one dummy tile
    assert (index.vit == np.maximum([len(s["images"]) for s in samples], 1)).all()


def test_packed_group_equals_each_sample_alone(tokenizer, vlm):
    torch.manual_seed(0)
    model = TinyVLM(vlm).eval()
    data = VLMData(image_text_samples(3, seed=5), tokenizer, vlm)
    packed = data.collate(np.arange(3))
    labels = packed.pop("labels")
    logits = model(**packed)
    start = 0
    for i in range(3):
        alone = data.collate(np.array([i]))
        alone.pop("labels")
        n = len(alone["input_ids"])
        assert torch.allclose(logits[start:start + n], model(**alone), atol=1e-5)
        start += n
    assert len(labels) == start


def test_padded_batch_pads_each_sample_to_the_longest(tokenizer, vlm):
    data = VLMData(image_text_samples(4, seed=1, skew=3.0), tokenizer, vlm)
    lengths = data.index().tok
    batch = data.collate(np.arange(4), packed=False)
    assert len(batch["input_ids"]) == 4 * lengths.max()
    assert int((batch["labels"] != -100).sum()) == int((data.collate(np.arange(4))["labels"] != -100).sum())


def test_forward_backward_reaches_every_parameter_and_recompute_changes_nothing(tokenizer, vlm):
    data = VLMData(image_text_samples(6, seed=3), tokenizer, vlm)
    batch = data.collate(np.arange(6))
    grads = {}
    for modes in (["none"] * 11, ["full", "selective", "full", "none", "selective", "none", "selective", "full",
                                  "none", "selective", "none"]):
        torch.manual_seed(0)
        layers = torch.nn.Sequential(*wrap_layers(vlm, modes))
        x = (batch["pixels"], batch["input_ids"], batch["seq_ids"], batch["pos_ids"])
        loss = torch.nn.functional.cross_entropy(layers(x), batch["labels"], ignore_index=-100)
        loss.backward()
        grads[tuple(modes)] = [p.grad.clone() for p in layers.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads[tuple(modes)])
    plain, recomputed = grads.values()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recomputed))


def test_pipeline_layer_states_assemble_into_the_model(vlm):
    torch.manual_seed(0)
    layers = wrap_layers(vlm, ["none"] * len(layer_kinds(vlm)))
    model = pipeline_state_to_model(vlm, {i: layer.state_dict() for i, layer in enumerate(layers)})
    assert torch.equal(model.layers[0].patch.weight, layers[0].layer.patch.weight)
    with pytest.raises(ValueError, match="does not match"):
        pipeline_state_to_model(vlm, {0: layers[0].state_dict()})


def test_committed_profile_describes_the_default_model(vlm):
    profile = CostProfile.from_json(DEFAULT_PROFILE)
    assert profile.layers == layer_kinds(vlm)
    model = TinyVLM(vlm)
    assert profile.params.tolist() == [sum(p.numel() for p in layer.parameters()) for layer in model.layers]


def test_bad_jsonl_rows_become_error_records(tmp_path, tokenizer, vlm):
    path = tmp_path / "data.jsonl"
    rows = [{"id": "a", "images": [1], "text": "red ."}, "not json", {"id": "b", "images": "x", "text": "t"},
            {"id": "a", "images": [], "text": "again"}, {"images": [], "text": "no id"},
            {"id": "c", "images": [2, 3], "text": "word " * 2000}, {"id": "d", "images": [], "text": "fine"}]
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    index, samples, errors = read_jsonl_index(path, VLMData.format(tokenizer, vlm), max_tokens=512)
    assert [s["id"] for s in samples] == ["a", "d"] and list(index.ids) == ["a", "d"]
    assert [e["line"] for e in errors] == [2, 3, 4, 5, 6]
    reasons = " | ".join(e["reason"] for e in errors)
    for expected in ("invalid JSON", "'images'", "duplicate id", "missing field 'id'", "exceed max_tokens"):
        assert expected in reasons


def test_index_round_trips(tmp_path):
    index = LengthIndex.from_lengths([1, 2, 3], [10, 20, 30])
    index.save(tmp_path / "i.npz")
    again = LengthIndex.load(tmp_path / "i.npz")
    assert list(again.ids) == ["0", "1", "2"] and again.tok.tolist() == [10, 20, 30]


def test_config_rejects_impossible_layouts():
    with pytest.raises(ValueError, match="multiple of"):
        TrainVLMConfig(pipeline_stages=3)
    with pytest.raises(ValueError, match="zero_stage"):
        TrainVLMConfig.model_validate({"train": {"zero_stage": 2, "micro_batch_size": 1}})
    with pytest.raises(ValueError, match="micro_batch_size"):
        TrainVLMConfig.model_validate({"train": {"micro_batch_size": 4}})
