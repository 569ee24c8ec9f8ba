"""How the judges reach a language model: one async batch-generate function.

`Generate` takes prompts and one `SamplingParams` and returns, per prompt, a `Generation` or a
`PromptRejected` (the engine refused that prompt, e.g. it is longer than the context). The judge logic is
written once against it: `from_engine` adapts a local `Engine` (jobs, tests), and the Serve app passes a
function that sends each prompt to the LLM deployment, whose `@serve.batch` regroups concurrent prompts
into batches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from rayflow.llm import Engine, Generation, Prompt, PromptRejected, SamplingParams

Generate = Callable[[Sequence[Prompt], SamplingParams], Awaitable[list[Generation | PromptRejected]]]


def from_engine(engine: Engine) -> Generate:
    """A `Generate` over a local engine: one `engine.generate` call per batch, in the caller's thread."""

    async def generate(
        prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Generation | PromptRejected]:
        return engine.generate(list(prompts), params) if prompts else []

    return generate
