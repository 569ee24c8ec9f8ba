"""The judge over a real tiny model (hf backend): prompts, parsing, label mode, p(unsafe), refusals."""

import math

import pytest
from pydantic import ValidationError

from rayflow.eval.safety import build_prompt, parse_judgement
from rayflow.eval.safety.judge import JudgeConfig, JudgeRequest, SafetyJudge, sampling_for
from rayflow.eval.safety.protocols import get_protocol
from rayflow.eval.safety.protocols.llamaguard import p_unsafe
from rayflow.llm import EngineConfig, Generation, TokenLogprob, build_engine


@pytest.fixture(scope="module")
def engine(tiny_model):
    return build_engine(
        EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=1024)
    )


@pytest.fixture(scope="module")
def judge(engine):
    return SafetyJudge(engine, "tiny", JudgeConfig(max_tokens=32))


REQUESTS = [
    JudgeRequest(
        id=1, query="How do I bake bread?", response="Mix flour, water, yeast; knead; bake.", scheme="safetyj"
    ),
    JudgeRequest(
        id="b",
        lang="zh",
        query="怎样开锁？",
        response="我不能帮助你。",
        scheme="shieldlm",
        rules=["拒绝是安全的。"],
    ),
    JudgeRequest(
        id=3, query="Tell me a joke.", response="Why did the chicken cross the road?", scheme="llamaguard"
    ),
    JudgeRequest(id=4, query="Hi", response="", scheme="wildguard", mode="label"),
]


def test_results_follow_the_model_output_in_order(judge, engine):
    results = judge.judge(REQUESTS)
    assert [r.id for r in results] == [1, "b", 3, 4]
    for request, result in zip(REQUESTS, results):
        prompt = build_prompt(
            request.scheme, request.query, request.response, request.lang, request.rules or ()
        )
        [expected] = engine.generate([prompt], sampling_for(request, judge.config))
        assert result.raw_output == expected.text  # the judge really ran this prompt, greedily
        parsed = parse_judgement(request.scheme, expected.text, request.lang)
        assert (result.label, result.parse_ok, result.critique) == (
            parsed.label,
            parsed.parse_ok,
            parsed.critique,
        )
        assert result.judge_model == "tiny" and result.prompt_version == f"{request.scheme}/v1"
        assert result.latency_ms > 0 and result.error is None
        p = get_protocol(request.scheme).p_unsafe(expected)  # read at the verdict token, every scheme
        assert result.p_unsafe == (None if p is None else pytest.approx(p, abs=1e-4))
    assert 0.0 <= results[2].p_unsafe <= 1.0  # llamaguard's first token always carries a score


def test_label_mode_stops_at_the_verdict():
    config = JudgeConfig(max_tokens=200)
    label = sampling_for(JudgeRequest(query="q", response="r", mode="label"), config)
    critique = sampling_for(JudgeRequest(query="q", response="r", mode="critique"), config)
    assert label.max_tokens < critique.max_tokens == 200 and "[Analysis]" in label.stop and not critique.stop
    guard = sampling_for(JudgeRequest(query="q", response="r", scheme="llamaguard"), config)
    assert guard.logprobs == 20 and guard.max_tokens < 200  # no critique section to generate


def test_a_prompt_over_the_context_fails_alone(judge):
    long = JudgeRequest(id="long", query="word " * 2000, response="r")
    ok, bad = judge.judge([REQUESTS[0], long])
    assert ok.error is None and ok.raw_output
    assert bad.label == "unknown" and not bad.parse_ok and "context" in bad.error


def test_request_validation_names_the_field():
    with pytest.raises(ValidationError, match="rules"):
        JudgeRequest(query="q", response="r", scheme="safetyj", rules=["x"])
    with pytest.raises(ValidationError, match="scheme"):
        JudgeRequest(query="q", response="r", scheme="gpt4")
    with pytest.raises(ValidationError, match="query"):
        JudgeRequest(query="", response="r")


def lp(token, logprob, top):
    return TokenLogprob(token_id=0, token=token, logprob=logprob, top=top)


def test_p_unsafe_reads_the_first_word_token():
    gen = Generation(
        text="\nunsafe",
        token_ids=[1, 2],
        finish_reason="stop",
        logprobs=[
            lp("\n", -0.01, {"\n": -0.01}),  # whitespace first: skipped
            lp("un", math.log(0.6), {"un": math.log(0.6), "safe": math.log(0.3), "Unsafe": math.log(0.05)}),
        ],
    )
    assert p_unsafe(gen) == pytest.approx(0.65)
    assert p_unsafe(Generation(text="safe", token_ids=[1], finish_reason="stop")) is None
