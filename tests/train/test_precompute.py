"""Frozen-model log-probs through Ray Data: equal to the trainer's own forward, cached, cross-tokenizer."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rayflow.llm import EngineConfig, build_engine
from rayflow.llm import build_tiny_model, train_tokenizer
from rayflow.train.logprobs import collate_preference, split_pair, token_logps
from rayflow.train.precompute import PrecomputeConfig, precompute_logps
from rayflow.train.preference_data import DataConfig, load_examples


@pytest.fixture(scope="module")
def examples(pref_data, tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    ex, _ = load_examples(pref_data["eval"], "preference", tok, DataConfig(train=str(pref_data["eval"])))
    return tok, ex[:12]


def test_precomputed_equal_on_the_fly_and_are_cached(ray_session, tiny_models, examples, tmp_path):
    tok, ex = examples
    cfg = PrecomputeConfig(cache_dir=str(tmp_path), batch_size=5, cpus_per_actor=1)
    engine = EngineConfig(backend="hf", model=str(tiny_models["small"]), dtype="float32")
    first = precompute_logps(ex, engine, policy_tokenizer=tok, per_token=True, cfg=cfg)
    assert not first.from_cache

    # The trainer's forward (left padding even, to show the boundary is padding-free) on the same model.
    model = AutoModelForCausalLM.from_pretrained(tiny_models["small"], dtype=torch.float32).eval()
    batch = collate_preference(
        [e.prompt_ids for e in ex],
        [e.chosen_ids for e in ex],
        [e.rejected_ids for e in ex],
        tok.pad_token_id,
        side="left",
    )
    with torch.no_grad():
        chosen, rejected = split_pair(token_logps(model, batch).sum(-1))
    assert torch.allclose(torch.tensor(first.chosen), chosen, atol=1e-5)
    assert torch.allclose(torch.tensor(first.rejected), rejected, atol=1e-5)
    assert [len(t) for t in first.chosen_tokens] == [len(e.chosen_ids) for e in ex]

    again = precompute_logps(ex, engine, policy_tokenizer=tok, cfg=cfg)
    assert again.from_cache and again.chosen == first.chosen and again.cache_path == first.cache_path
    # "likelihood" reference: the response after a lone BOS, without the prompt. Other rows and another mode are
    # another cache entry.
    uncond = precompute_logps(ex[:4], engine, policy_tokenizer=tok, mode="unconditional", cfg=cfg)
    assert not uncond.from_cache and uncond.cache_path != first.cache_path
    assert uncond.chosen_lengths == [len(e.chosen_ids) for e in ex[:4]]
    hf = build_engine(engine)
    direct = hf.score([[tok.bos_token_id]] * 4, [e.chosen_ids for e in ex[:4]])
    assert uncond.chosen == pytest.approx([s.sum for s in direct], abs=1e-5)
    assert uncond.chosen != pytest.approx(first.chosen[:4], abs=1e-3)


def test_reference_with_another_tokenizer_scores_its_own_tokens(ray_session, examples, tmp_path):
    tok, ex = examples
    other_dir = build_tiny_model(
        tmp_path / "other", size="tiny", seed=3, tokenizer=train_tokenizer(vocab_size=512)
    )
    other_tok = AutoTokenizer.from_pretrained(other_dir)
    assert len(other_tok) != len(tok)
    engine = EngineConfig(backend="hf", model=str(other_dir), dtype="float32")
    cfg = PrecomputeConfig(cache_dir=str(tmp_path / "cache"), cpus_per_actor=1)
    got = precompute_logps(ex[:4], engine, policy_tokenizer=tok, cfg=cfg)
    hf = build_engine(engine)
    texts = [e.prompt for e in ex[:4]]
    direct = hf.score(
        texts,
        [
            other_tok(e.chosen, add_special_tokens=False)["input_ids"] + [other_tok.eos_token_id]
            for e in ex[:4]
        ],
    )
    assert got.chosen == pytest.approx([s.sum for s in direct], abs=1e-5)
    with pytest.raises(ValueError, match="share one tokenizer"):
        precompute_logps(ex[:4], engine, policy_tokenizer=tok, per_token=True, cfg=cfg)
