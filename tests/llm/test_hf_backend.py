"""The hf backend on a real tiny Llama: generation, log-probs, scoring, padding invariance, refused prompts."""

import math

import pytest

from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine

CHAT = [{"role": "user", "content": "Tell me about bread."}]
CONTEXT = 128


@pytest.fixture(scope="module")
def engine(tiny_model):
    # batch_size 2 forces several micro-batches and mixed padding in the tests below; a short context makes
    # over-long prompts cheap.
    return build_engine(
        EngineConfig(
            backend="hf", model=str(tiny_model), dtype="float32", batch_size=2, max_model_len=CONTEXT
        )
    )


def test_greedy_is_reproducible_and_batch_invariant(engine):
    prompts = ["The cat", CHAT, "A much longer prompt about travel and trains and maps", "Hi"]
    params = SamplingParams(max_tokens=12)
    batched = engine.generate(prompts, params)
    again = engine.generate(prompts, params)
    alone = [engine.generate([p], params)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in again] == [g.text for g in alone]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    for g in batched:
        assert len(g.token_ids) <= 12
        assert g.finish_reason in ("stop", "length")


def test_sampling_is_seeded(engine):
    hot = SamplingParams(temperature=1.0, max_tokens=16, seed=7)
    assert engine.generate(["The cat"], hot)[0].text == engine.generate(["The cat"], hot)[0].text
    texts = {engine.generate(["The cat"], hot.model_copy(update={"seed": s}))[0].text for s in range(4)}
    assert len(texts) > 1


def test_generated_logprobs_match_scoring(engine):
    gen = engine.generate([CHAT], SamplingParams(max_tokens=10, logprobs=3))[0]
    assert len(gen.logprobs) == len(gen.token_ids)
    for lp in gen.logprobs:
        assert len(lp.top) <= 3 and lp.logprob <= 0
        assert max(lp.top.values()) >= lp.logprob - 1e-6  # greedy picks the top token
    scored = engine.score([CHAT], [gen.token_ids])[0]
    for a, b in zip(scored.logprobs, gen.logprobs):
        assert math.isclose(a, b.logprob, abs_tol=1e-4)


def test_score_boundary_and_batch_invariance(engine):
    prompts = ["The sky is", CHAT, "x"]
    completions = [" blue today", "Bread is baked.", " y z"]
    batched = engine.score(prompts, completions)
    alone = [engine.score([p], [c])[0] for p, c in zip(prompts, completions)]
    tok = engine.tokenizer
    for s, a, c in zip(batched, alone, completions):
        assert s.token_ids == tok(c, add_special_tokens=False)["input_ids"]
        assert len(s.logprobs) == len(s.token_ids)
        assert all(v <= 0 for v in s.logprobs)
        assert s.logprobs == pytest.approx(a.logprobs, abs=1e-5)
    assert batched[0].prompt_len == len(tok("The sky is", add_special_tokens=False)["input_ids"])
    assert batched[0].sum == pytest.approx(sum(batched[0].logprobs))


def test_stop_strings_cut_the_text(engine):
    free = engine.generate(["The cat"], SamplingParams(max_tokens=20))[0].text
    stop = free.strip()[:1]  # a character the greedy continuation surely contains
    cut = engine.generate(["The cat"], SamplingParams(max_tokens=20, stop=(stop,)))[0]
    assert stop not in cut.text and cut.finish_reason == "stop"
    assert free.startswith(cut.text)


def test_refused_prompts_fail_alone(engine):
    words = engine.tokenizer("word " * 300, add_special_tokens=False)["input_ids"]
    vocab = engine.vocab_size
    # over the context, empty, out-of-vocabulary and negative ids in the middle of a batch
    bad = {1: "word " * 300, 3: "", 4: [5, vocab], 5: [-1, 5]}
    reasons = {1: "context", 3: "empty", 4: "vocabulary", 5: "negative"}
    near_end = words[: CONTEXT - 3]  # three positions left: generation stops there
    prompts = ["The cat", bad[1], CHAT, bad[3], bad[4], bad[5], near_end, "Hi"]
    params = SamplingParams(max_tokens=12)
    batched = engine.generate(prompts, params)
    assert batched == [engine.generate([p], params)[0] for p in prompts]  # the good ones: as if alone
    assert {i for i, g in enumerate(batched) if isinstance(g, PromptRejected)} == set(bad)
    assert all(reasons[i] in batched[i].reason for i in bad)
    capped = batched[6]
    assert len(capped.token_ids) <= 3 and (capped.finish_reason == "length" or len(capped.token_ids) < 3)

    completions = [" sat", " x", "Bread is baked.", " y", " z", " w", " a", [vocab]]
    scored = engine.score(prompts, completions)
    alone = [engine.score([p], [c])[0] for p, c in zip(prompts, completions)]
    assert {i for i, s in enumerate(scored) if isinstance(s, PromptRejected)} == {*bad, 7}
    assert scored[7] == alone[7] and "vocabulary" in scored[7].reason  # a bad completion id
    for i in (0, 2, 6):
        assert scored[i].token_ids == alone[i].token_ids
        assert scored[i].logprobs == pytest.approx(alone[i].logprobs, abs=1e-5)


def test_mistakes_in_the_call_raise(engine):
    with pytest.raises(ValueError, match="2 prompts but 1"):
        engine.score(["a", "b"], [" c"])
    with pytest.raises(TypeError, match="prompt"):
        engine.generate(["ok", 42])


def test_invalid_text_and_max_tokens_over_the_context_are_refused_alone(engine):
    lone = "\ud800"
    prompts = ["The cat", f"a{lone}b", [{"role": "user", "content": lone}], "Hi"]
    out = engine.generate(prompts, SamplingParams(max_tokens=4))
    assert [type(g).__name__ for g in out] == ["Generation", "PromptRejected", "PromptRejected", "Generation"]
    assert "lone surrogate U+D800 at character 1" in out[1].reason and out[1].field == "prompt"
    scored = engine.score(["The cat", "The cat"], [" sat", lone])
    assert scored[0].logprobs and "completion is not valid Unicode" in scored[1].reason
    [too_many] = engine.generate(["The cat"], SamplingParams(max_tokens=CONTEXT + 1))
    assert too_many.field == "max_tokens" and f"context length {CONTEXT}" in too_many.reason
    # Fixed bounds are the sampling config's own: every caller gets them, on every backend.
    for bad in ({"seed": 2**64}, {"seed": -1}, {"stop": ("",)}, {"stop": ("ok", lone)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


def test_penalties_top_k_and_min_tokens(engine):
    plain = engine.generate(["The cat"], SamplingParams(max_tokens=16))[0]
    for field, value in (("presence_penalty", 2.0), ("frequency_penalty", 2.0), ("repetition_penalty", 3.0)):
        changed = engine.generate(["The cat"], SamplingParams(max_tokens=16, **{field: value}))[0]
        assert changed.token_ids != plain.token_ids, field
    # The presence penalty lowers exactly the logits of tokens generated so far.
    import torch

    from rayflow.llm.backends.hf import OutputPenalty

    scores = torch.zeros(1, 6)
    out = OutputPenalty(width=2, presence=1.0, frequency=0.5)(torch.tensor([[4, 4, 1, 1, 3]]), scores)
    assert out.tolist() == [[0.0, -2.0, 0.0, -1.5, 0.0, 0.0]]
    greedy = engine.generate(["The cat"], SamplingParams(max_tokens=12))[0]
    hot = SamplingParams(temperature=1.5, top_k=1, max_tokens=12, seed=3)
    assert engine.generate(["The cat"], hot)[0].token_ids == greedy.token_ids
    # A model that always wants to end: EOS comes at once, or right after min_tokens.
    eos = engine.tokenizer.eos_token_id

    def favour_eos(module, args, logits):
        logits[..., eos] += 1000.0
        return logits

    hook = engine.model.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        assert engine.generate(["The cat"], SamplingParams(max_tokens=8))[0].token_ids == []
        assert len(engine.generate(["The cat"], SamplingParams(max_tokens=8, min_tokens=5))[0].token_ids) == 5
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="min_tokens"):
        SamplingParams(max_tokens=4, min_tokens=5)
