"""The LLM deployment's health check on the class itself (no Ray, hf engine, calls not regrouped into
batches): a stuck engine call fails it after `stuck_after_s`, it passes again once the engine makes progress,
and a closed engine fails it."""

import asyncio
import threading

import pytest

from rayflow.llm import EngineConfig, SamplingParams
from rayflow.serving import LLMServer, LLMServerConfig


def test_health_fails_while_the_engine_is_stuck_and_when_it_is_closed(tiny_model):
    config = LLMServerConfig(
        engine=EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=256),
        stuck_after_s=0.3,
    )
    server = LLMServer.func_or_class(config)
    release = threading.Event()
    generate = server.engine.generate

    def stuck_generate(prompts, params):
        release.wait(timeout=30)  # an engine call that makes no progress until released
        return generate(prompts, params)

    server.engine.generate = stuck_generate

    async def unbatched(prompt, params):  # serve.batch runs only inside a replica; the rest is the real path
        [out] = await server._generate([prompt], params)
        return out

    server._batch = unbatched

    async def scenario():
        server.check_health()  # idle: healthy
        call = asyncio.ensure_future(server.complete("Once", SamplingParams(max_tokens=2)))
        await asyncio.sleep(0.1)
        server.check_health()  # waiting, but within stuck_after_s
        await asyncio.sleep(0.4)
        with pytest.raises(RuntimeError, match="stuck: 1 requests waiting"):
            server.check_health()
        release.set()
        done = await call
        server.check_health()  # progress again: healthy
        return done

    assert asyncio.run(scenario()).generation is not None
    server.engine.close()
    with pytest.raises(Exception, match="closed"):
        server.check_health()
