"""How the judges reach a language model: one async batch-generate function.

`Generate` takes prompts and one `SamplingParams` and returns, per prompt, a `Generation` or a `Rejected`
(the engine refused that prompt, e.g. it is longer than the context). The judge logic is written once
against it: `from_engine` adapts a local `Engine` (jobs, tests), and the Serve app passes a function that
sends each prompt to the LLM deployment, whose `@serve.batch` regroups concurrent prompts into batches.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rayflow.llm import Engine, Generation, Prompt, SamplingParams


@dataclass(frozen=True)
class Rejected:
    """The engine refused one prompt; `reason` is its message."""

    reason: str


Generate = Callable[[Sequence[Prompt], SamplingParams], Awaitable[list[Generation | Rejected]]]


def rejection_errors() -> tuple[type[Exception], ...]:
    """Exceptions meaning "this prompt is refused" (too long, empty): ValueError from the hf backend, and
    vLLM's client errors, which are not ValueErrors. vLLM is only consulted if already imported."""
    vllm_errors = sys.modules.get("vllm.exceptions")
    client_error = getattr(vllm_errors, "VLLMClientError", None)
    return (ValueError, client_error) if client_error is not None else (ValueError,)


def from_engine(engine: Engine) -> Generate:
    """A `Generate` over a local engine: one `engine.generate` call per batch, in the caller's thread.

    A prompt the engine rejects costs only itself: the batch is retried one prompt at a time.
    """

    async def generate(prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation | Rejected]:
        if not prompts:
            return []
        try:
            return list(engine.generate(list(prompts), params))
        except rejection_errors():
            return [generate_one(engine, p, params) for p in prompts]

    return generate


def generate_one(engine: Engine, prompt: Prompt, params: SamplingParams) -> Generation | Rejected:
    try:
        return engine.generate([prompt], params)[0]
    except rejection_errors() as err:
        return Rejected(str(err))
