"""rayflow's engine layer: `Engine.generate`, `Engine.stream` and `Engine.score` over vLLM, transformers or an OpenAI server.

    from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine
    engine = build_engine(EngineConfig(backend="hf", model="tiny:tiny"))
    engine.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_tokens=16))
    engine.score(["The sky is"], [" blue"])[0].logprobs   # one log-prob per completion token
    for delta in engine.stream("Once upon", SamplingParams(max_tokens=16)): print(delta.text, end="")

Each result is a `Generation`/`Scored`, or a `PromptRejected` for a prompt the engine cannot serve (empty,
too long for the context, token ids outside the vocabulary, refused by the server): one bad prompt never
fails its batch.

Modules: `types` (configs, results, the `Engine` protocol), `prompts` (tokenizer, prompt tokens, the
refusal rule), `streaming` (a stream's incremental text; streams for async code), `models` (model names ->
paths), `tiny` (offline tiny models), `backends` (the registry `build_engine` and one module per backend:
`hf`, `vllm`, `openai`). Everything other packages need is
exported here; nothing outside `rayflow/llm/` imports its submodules.
"""

from rayflow.llm.backends import build_engine
from rayflow.llm.models import resolve_model_path
from rayflow.llm.prompts import completion_token_ids, load_tokenizer, prompt_token_ids, truncate_at_stop
from rayflow.llm.streaming import astream, stream_from_engine
from rayflow.llm.types import (
    SEED_MAX,
    Completion,
    Delta,
    Engine,
    EngineConfig,
    EngineError,
    Generation,
    Message,
    Prompt,
    PromptRejected,
    SamplingParams,
    Scored,
    Stream,
    TokenLogprob,
    unicode_problem,
)

# The tiny-model builder imports torch and transformers: loaded on first use, so pure modules that only need
# the types above (safety protocols, parsers) stay light.
_TINY = ("REFINER_DIR", "build_family", "build_tiny_model", "resolve_model", "train_tokenizer")


def __getattr__(name: str):
    if name in _TINY:
        from rayflow.llm import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module 'rayflow.llm' has no attribute {name!r}")


__all__ = [
    "REFINER_DIR",
    "SEED_MAX",
    "Completion",
    "Delta",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Generation",
    "Message",
    "Prompt",
    "PromptRejected",
    "SamplingParams",
    "Scored",
    "Stream",
    "TokenLogprob",
    "astream",
    "build_engine",
    "build_family",
    "build_tiny_model",
    "completion_token_ids",
    "load_tokenizer",
    "prompt_token_ids",
    "resolve_model",
    "resolve_model_path",
    "stream_from_engine",
    "train_tokenizer",
    "truncate_at_stop",
    "unicode_problem",
]
