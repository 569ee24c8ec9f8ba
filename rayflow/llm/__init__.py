"""rayflow's engine layer: `Engine.generate` and `Engine.score` over vLLM, transformers or an OpenAI server.

    from rayflow.llm import EngineConfig, SamplingParams, build_engine
    engine = build_engine(EngineConfig(backend="hf", model="tiny:tiny"))
    engine.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_tokens=16))
    engine.score(["The sky is"], [" blue"])[0].logprobs   # one log-prob per completion token

See `rayflow.llm.engine` for the token-boundary contract of `score`.
"""

from rayflow.llm.engine import (
    Completion,
    Engine,
    EngineConfig,
    EngineError,
    Generation,
    Prompt,
    SamplingParams,
    Scored,
    TokenLogprob,
    build_engine,
)

__all__ = [
    "Completion",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Generation",
    "Prompt",
    "SamplingParams",
    "Scored",
    "TokenLogprob",
    "build_engine",
]
