"""Response log-probs: masking, padding side, concatenated forward, agreement with the engine layer."""

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from rayflow.llm import EngineConfig, build_engine
from rayflow.train.logprobs import collate, collate_preference, sequence_logps, split_pair, token_logps

PAIRS = [([5, 6, 7], [8, 9, 10, 3]), ([11, 12], [13, 3]), ([14, 15, 16, 17, 18], [19, 20, 21, 22, 23, 3])]


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


def test_collate_masks_prompt_and_padding():
    b = collate(PAIRS, pad_id=0)
    assert b["input_ids"].shape == (3, 11) and b["loss_mask"].shape == (3, 10)
    assert b["loss_mask"].sum(-1).tolist() == [4, 2, 6]
    # loss_mask[:, t] marks token t+1: the first response token of row 0 is at index 3
    assert b["loss_mask"][0].nonzero().flatten().tolist() == [2, 3, 4, 5]
    left = collate(PAIRS, pad_id=0, side="left")
    assert left["position_ids"][1].tolist() == [0] * 7 + [0, 1, 2, 3]


def test_left_and_right_padding_give_the_same_logps(model):
    with torch.no_grad():
        right = sequence_logps(model, collate(PAIRS, 0))
        left = sequence_logps(model, collate(PAIRS, 0, side="left"))
        alone = torch.cat([sequence_logps(model, collate([p], 0)) for p in PAIRS])
    assert torch.allclose(right, left, atol=1e-5) and torch.allclose(right, alone, atol=1e-5)
    assert (right < 0).all()


def test_concatenated_forward_equals_separate_forwards(model):
    prompts, chosen, rejected = [p for p, _ in PAIRS], [c for _, c in PAIRS], [[40, 41, 3]] * 3
    with torch.no_grad():
        c, r = split_pair(sequence_logps(model, collate_preference(prompts, chosen, rejected, 0)))
        c2 = sequence_logps(model, collate(list(zip(prompts, chosen)), 0))
        r2 = sequence_logps(model, collate(list(zip(prompts, rejected)), 0))
    assert torch.allclose(c, c2, atol=1e-5) and torch.allclose(r, r2, atol=1e-5)


def test_prompt_and_padding_positions_get_no_gradient():
    batch = collate(PAIRS, 0)
    logits = torch.randn(3, 11, 32, requires_grad=True)
    fake = lambda **kw: SimpleNamespace(logits=logits)
    token_logps(fake, batch).sum().backward()
    grad_rows = logits.grad[:, :-1].abs().sum(-1) > 0
    assert torch.equal(grad_rows, batch["loss_mask"])
    assert logits.grad[:, -1].abs().sum() == 0


def test_training_logps_equal_engine_score(model, tiny_model):
    """The boundary the trainer uses is the engine layer's: precomputed references plug in exactly."""
    engine = build_engine(EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"))
    scored = engine.score([p for p, _ in PAIRS], [c for _, c in PAIRS])
    with torch.no_grad():
        ours = sequence_logps(model, collate(PAIRS, 0))
    assert torch.allclose(ours, torch.tensor([s.sum for s in scored]), atol=1e-5)
