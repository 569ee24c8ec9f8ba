"""The engine layer's types: what an engine is asked (`EngineConfig`, `SamplingParams`, `Prompt`) and what it
answers (`Generation`, `Scored`, `PromptRejected`), and the `Engine` protocol every backend implements.

An `Engine` does two things, in batches:

* `generate(prompts, params)` — continue each prompt. A prompt is a raw string, a list of chat messages
  (`[{"role": "user", "content": "..."}]`, rendered with the model's chat template and a generation prompt),
  or a list of token ids. Returns, per prompt and in order, a `Generation` or a `PromptRejected`.
* `score(prompts, completions)` — per-token log-probs of each completion given its prompt. The token
  boundary is exact and the same on every backend: the prompt is tokenised on its own (chat template +
  generation prompt for messages, no special tokens added for strings), the completion is tokenised on its
  own without special tokens, and the model reads `prompt_ids + completion_ids`. `Scored.logprobs[i]` is
  log p(completion_ids[i] | prompt_ids, completion_ids[:i]) in nats, computed in fp32 where the backend
  allows. Pass token ids instead of strings to control tokenisation yourself (e.g. to append EOS).
  Returns, per pair and in order, a `Scored` or a `PromptRejected`; with `top_logprobs=k` each `Scored`
  also holds the k likeliest tokens at every completion position (`Scored.top`).
* `stream(prompt, params)` — continue one prompt and yield its text as it is generated: `Delta`s whose
  texts join to what `generate` returns for the same prompt and parameters, the last one carrying the
  `finish_reason`; or a single `PromptRejected` (before any generation) for a prompt `generate` refuses.

A prompt the engine cannot serve costs only itself: every backend answers it with a `PromptRejected` and
serves the rest of the batch (the rule is in `rayflow.llm.prompts`). Mistakes in the call itself (a prompt
of the wrong type, prompts and completions of different lengths) still raise.

Nothing here imports torch, transformers or Ray: pure modules (parsers, protocols) import these types cheaply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field, field_validator, model_validator

from rayflow.config import Config

Message = dict[str, str]
Prompt = str | list[Message] | list[int]
"""A raw prompt string, a chat conversation, or prompt token ids."""
Completion = str | list[int]

SEED_MAX = 2**63 - 1
"""Largest seed every backend accepts: torch's generators take 64-bit seeds, and vLLM's engine client cannot
send integers past 64 bits to its engine process (a larger one used to wedge it)."""


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode (a lone UTF-16 surrogate, as JSON's `"\\ud800"` decodes to), or None.

    Tokenizers and UTF-8 encoders fail on such strings, so every layer refuses them up front.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not valid Unicode: lone surrogate U+{ord(text[err.start]):04X} at character {err.start}"
    return None


class EngineError(RuntimeError):
    """An engine could not be built or cannot do what was asked; the message says what to change."""


class SamplingParams(Config):
    """How to decode. temperature 0 means greedy (deterministic)."""

    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="nucleus sampling: likeliest tokens up to this mass; 1 = all"
    )
    max_tokens: int = Field(64, ge=1, description="new tokens per prompt")
    stop: tuple[str, ...] = Field(
        (), description="strings that end generation (non-empty); not included in the text"
    )
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="sampling seed (temperature > 0), 0..2**63-1; None = engine seed"
    )
    logprobs: int | None = Field(None, ge=0, le=20, description="top-k log-probs per generated token")
    top_k: int = Field(
        0, ge=-1, description="sample from the k likeliest tokens only; 0 or -1 = all (vLLM's -1)"
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="subtracted from the logit of every token already generated (OpenAI's)",
    )
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="subtracted from a token's logit once per time it was generated"
    )
    repetition_penalty: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="divides positive (multiplies negative) logits of prompt and output tokens; 1 = off",
    )
    min_tokens: int = Field(0, ge=0, description="new tokens before EOS or a stop string may end generation")

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: tuple[str, ...]) -> tuple[str, ...]:
        # An empty stop string matches everywhere: vLLM refuses it and transformers would stop at once.
        for i, s in enumerate(stop):
            problem = "is empty" if not s else unicode_problem(s)
            if problem:
                raise ValueError(f"stop string {i} {problem}")
        return stop

    @model_validator(mode="after")
    def _min_within_max(self) -> SamplingParams:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens: {self.min_tokens} is more than max_tokens ({self.max_tokens})")
        return self


class EngineConfig(Config):
    """Which model, on which backend. `model` is a local path, a hub id, or `tiny:<size>` (built offline)."""

    backend: Literal["vllm", "hf", "openai"] = Field(
        "hf", description="vllm (batched serving engine), hf (transformers) or openai (a /v1 server)"
    )
    model: str = Field("tiny:tiny", description="local path, hub id, or tiny:<size>[@<train_steps>]")
    tokenizer: str | None = Field(None, description="defaults to model")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype; auto = the checkpoint's"
    )
    seed: int = Field(
        0, ge=0, le=SEED_MAX, description="engine seed; sampling uses it when sampling.seed is None"
    )
    max_model_len: int | None = Field(None, description="context length; None = the model's")
    # hf
    device: str = Field("auto", description="hf: cpu, cuda, cuda:1 or auto")
    batch_size: int = Field(16, ge=1, description="hf: prompts per forward batch")
    # vllm
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="vllm: KV-cache fraction of GPU memory (of RAM on CPU); None = 0.9 GPU, 0.1 CPU",
    )
    enforce_eager: bool | None = Field(None, description="vllm: None = eager on CPU, graphs on GPU")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs one model replica is split across")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="vllm: extra vllm.LLM kwargs")
    # openai
    base_url: str | None = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: env var holding the key")
    server_model: str | None = Field(None, description="openai: model name on the server; None = model")
    echo_logprobs: bool = Field(
        True, description="openai: server's /v1/completions returns prompt log-probs with echo (vLLM does)"
    )
    request_timeout_s: float = Field(120.0, description="openai: seconds one HTTP request may take")
    max_concurrency: int = Field(8, ge=1, description="openai: requests in flight per batch")

    @model_validator(mode="after")
    def _openai_needs_url(self) -> EngineConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("engine.base_url is required for backend 'openai'")
        return self


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its log-prob (nats, raw model distribution) and the top-k alternatives."""

    token_id: int
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int | None = None  # the prompt's length in tokens, where the backend tokenised it


@dataclass(frozen=True)
class Delta:
    """One step of a stream: the text the new tokens add (may be "" while a multi-byte character or a
    possible stop string is incomplete), those tokens, and their log-probs when asked. The last delta of a
    stream has `finish_reason` ("stop" or "length") and the prompt's length in tokens."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class Scored:
    """Log-probs of one completion. `logprobs` has one float per completion token (nats)."""

    prompt_len: int
    token_ids: list[int]
    logprobs: list[float]
    top: list[dict[str, float]] | None = None  # per completion token, the top-k alternatives when asked

    @property
    def sum(self) -> float:
        return float(sum(self.logprobs))


@dataclass(frozen=True)
class PromptRejected:
    """The engine refused this one prompt (empty, not valid Unicode, too long for the context, token ids
    outside the vocabulary, `max_tokens` over the context, or refused by the model server); `reason` says why
    and `field` which part of the request is at fault: "prompt" (the prompt or completion itself) or the
    `SamplingParams` field (e.g. "max_tokens").

    Returned in place of a `Generation`/`Scored` so one bad prompt never fails its batch.
    """

    reason: str
    field: str = "prompt"


Stream = Callable[["Prompt", "SamplingParams"], AsyncIterator["Delta | PromptRejected"]]
"""An async source of one prompt's deltas: `rayflow.llm.stream_from_engine(engine)` or, on Serve,
`rayflow.serving.llm.stream_from_deployment(handle)`."""


@runtime_checkable
class Engine(Protocol):
    """What every backend implements; build one with `rayflow.llm.build_engine`."""

    config: EngineConfig

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Generation | PromptRejected]: ...

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], top_logprobs: int = 0
    ) -> list[Scored | PromptRejected]: ...

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None
    ) -> Iterator[Delta | PromptRejected]:
        """Yield `prompt`'s continuation as it is generated (see the module docstring). Other calls on the
        engine wait while a stream is open: consume or `close()` the iterator first."""
        ...

    def check_health(self) -> None:
        """Raise `EngineError` when the engine can no longer serve (closed, its process died, an error left it
        unusable). Cheap and safe to call from another thread while a call is running."""

    def close(self) -> None: ...
