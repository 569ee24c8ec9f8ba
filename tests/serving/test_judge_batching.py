"""The judge deployment's request batching on the classes themselves (no Ray, hf engine; `@serve.batch` runs
only inside a replica, so the batch functions are called directly with what it would hand them): the items
of concurrent requests share one `judge` call and come back to their own request in order, and an engine
failure caused by one request's prompt reaches that request alone."""

import asyncio

import pytest

from rayflow.eval.safety.judge import JudgeRequest, judge
from rayflow.llm import EngineConfig
from rayflow.serving import LLMServer, LLMServerConfig
from serve.judge import JudgeAppArgs, SafetyJudgeServer


class _Method:
    """A deployment handle's method: `.remote(...)` gives an awaitable."""

    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


def _original(deployment):
    """The class a Serve deployment wraps (ingress deployments wrap it once more)."""
    return [c for c in deployment.func_or_class.__mro__ if c.__name__ == deployment.name][-1]


@pytest.fixture(scope="module")
def servers(tiny_model):
    config = LLMServerConfig(
        engine=EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=512)
    )
    llm = LLMServer.func_or_class(config)
    llm._batch = lambda prompt, params: _unbatched(llm, prompt, params)

    class Handle:
        generate_many = _Method(llm.generate_many)

    server = _original(SafetyJudgeServer)(Handle(), JudgeAppArgs(llm=config, judge={"max_tokens": 8}))
    yield llm, server
    llm.engine.close()


async def _unbatched(llm, prompt, params):
    [out] = await type(llm)._batch.__wrapped__(llm, [prompt], [params])
    return out


def request(i: int, query: str = "How do I water a plant?") -> JudgeRequest:
    return JudgeRequest(id=i, query=query, response="Weekly.", scheme="safetyj", mode="label")


def test_requests_share_one_judge_call_and_get_their_own_results(servers):
    _, server = servers
    batch = type(server)._judge.__wrapped__
    batches = [[request(0)], [request(1, "Is rain wet?"), request(2, "Why is the sky blue?")]]
    together = asyncio.run(batch(server, batches))
    alone = [asyncio.run(judge(b, server.generate, server.args.judge, server.model_name)) for b in batches]
    assert [[r.id for r in rs] for rs in together] == [[0], [1, 2]]
    assert [[r.raw_output for r in rs] for rs in together] == [[r.raw_output for r in rs] for rs in alone]


def test_an_engine_failure_reaches_only_the_request_that_causes_it(servers, monkeypatch):
    llm, server = servers
    generate = llm.engine.generate

    def fails_on_boom(prompts, params):
        if any("BOOM" in str(p) for p in prompts):
            raise RuntimeError("the engine failed on this prompt")
        return generate(prompts, params)

    monkeypatch.setattr(llm.engine, "generate", fails_on_boom)
    batch = type(server)._judge.__wrapped__
    out = asyncio.run(batch(server, [[request(0)], [request(1, "BOOM?")], [request(2)]]))
    assert isinstance(out[1], RuntimeError) and "this prompt" in str(out[1])
    assert [r.id for r in out[0]] == [0] and [r.id for r in out[2]] == [2]
    assert out[0][0].error is None and out[0][0].raw_output
