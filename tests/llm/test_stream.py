"""Token streaming on the hf backend (a real tiny Llama): the deltas are what `generate` returns, cut as it is
written, and the first one arrives while the model is still generating. The vllm backend's stream is checked
in test_vllm_backend.py, the served streams in tests/serving/test_openai_compat.py and tests/rag."""

import asyncio
import threading

import pytest

from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine, stream_from_engine
from rayflow.llm.streaming import StreamText

CHAT = [{"role": "user", "content": "Tell me about bread."}]


@pytest.fixture(scope="module")
def engine(tiny_model):
    return build_engine(EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=128))


@pytest.mark.parametrize(
    "prompt, params",
    [
        (CHAT, SamplingParams(max_tokens=16)),
        ("Once upon a time", SamplingParams(max_tokens=10, logprobs=2)),
        ("Once upon a time", SamplingParams(max_tokens=12, temperature=0.9, seed=5, repetition_penalty=1.3)),
    ],
    ids=["greedy-chat", "logprobs", "seeded"],
)
def test_stream_joins_to_generate(engine, prompt, params):
    [whole] = engine.generate([prompt], params)
    deltas = list(engine.stream(prompt, params))
    assert len(deltas) > 2 and all(d.finish_reason is None for d in deltas[:-1])
    assert "".join(d.text for d in deltas) == whole.text
    assert [t for d in deltas for t in d.token_ids] == whole.token_ids
    assert (deltas[-1].finish_reason, deltas[-1].prompt_tokens) == (whole.finish_reason, whole.prompt_tokens)
    if params.logprobs is not None:
        streamed = [t for d in deltas for t in d.logprobs]
        assert [(t.token_id, t.top.keys()) for t in streamed] == [
            (t.token_id, t.top.keys()) for t in whole.logprobs
        ]
        assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in whole.logprobs], abs=1e-5)


def test_stop_strings_are_held_back_and_cut_as_generate_cuts_them(engine):
    free = engine.generate(["Once upon a time"], SamplingParams(max_tokens=16))[0].text
    for stop in (free[6:8], "never in this text"):
        params = SamplingParams(max_tokens=16, stop=(stop,))
        [whole] = engine.generate(["Once upon a time"], params)
        deltas = list(engine.stream("Once upon a time", params))
        assert "".join(d.text for d in deltas) == whole.text
        assert all(stop not in d.text for d in deltas) and deltas[-1].finish_reason == whole.finish_reason


def test_stream_text_decodes_each_character_once_and_holds_back_possible_stops(engine):
    ids = engine.tokenizer("ab 你好 cd", add_special_tokens=False)["input_ids"]
    text = StreamText(engine.tokenizer, stop=("c d", "好 cx"))
    pieces = [text.add(t) for t in ids]
    assert "".join(p for p, _ in pieces) + text.finish() == "ab 你好 cd"
    assert not any(stopped for _, stopped in pieces) and "\ufffd" not in "".join(p for p, _ in pieces)
    cut = StreamText(engine.tokenizer, stop=("好 c",))
    sent = ""
    for t in ids:
        piece, stopped = cut.add(t)
        sent += piece
        if stopped:
            break
    assert stopped and sent == "ab 你"


def test_first_delta_arrives_while_the_model_is_still_generating(engine, monkeypatch):
    """The model's third forward pass waits until the consumer has checked the first delta: a stream that
    only delivered after generation ended would time out the wait and deliver with `finished` set."""
    finished, first_read, waits = threading.Event(), threading.Event(), []
    forward = engine.model.forward
    calls = []

    def gated_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            waits.append(first_read.wait(timeout=20))
        return forward(*args, **kwargs)

    generate = engine.model.generate

    def generate_then_flag(*args, **kwargs):
        try:
            return generate(*args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(engine.model, "forward", gated_forward)
    monkeypatch.setattr(engine.model, "generate", generate_then_flag)
    stream = engine.stream("Once upon a time", SamplingParams(max_tokens=8, min_tokens=8))
    first = next(stream)
    assert not finished.is_set() and first.token_ids  # read before generation ended
    first_read.set()
    rest = list(stream)
    assert (
        finished.is_set()
        and waits == [True]
        and len(first.token_ids) + sum(len(d.token_ids) for d in rest) == 8
    )


def test_refused_prompt_and_early_close(engine):
    assert [type(x) for x in engine.stream("", SamplingParams())] == [PromptRejected]
    [refused] = list(engine.stream("word " * 200, SamplingParams()))
    assert "no room" in refused.reason
    opened = engine.stream("Once upon a time", SamplingParams(max_tokens=64))
    next(opened)
    opened.close()  # stops the worker; the engine serves the next call
    params = SamplingParams(max_tokens=6)
    assert engine.generate(["Hi"], params)[0].text == "".join(d.text for d in engine.stream("Hi", params))


def test_stream_from_engine_for_async_code(engine):
    async def collect():
        return [
            d async for d in stream_from_engine(engine)("Once upon a time", SamplingParams(max_tokens=10))
        ]

    deltas = asyncio.run(collect())
    assert (
        "".join(d.text for d in deltas)
        == engine.generate(["Once upon a time"], SamplingParams(max_tokens=10))[0].text
    )
