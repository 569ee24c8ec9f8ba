"""OpenAI-compatible routes over any completion backend: `/v1/chat/completions`, `/v1/completions` (both
with `stream: true`) and `/v1/models`, so the official `openai` client and OpenAI tooling talk to rayflow.

The backend completes one prompt at a time (`complete(prompt, params) -> Completed`); the LLM deployment
batches concurrent calls with `@serve.batch`. Streaming sends the completion as server-sent events, one
chunk per generated token, once its batch has finished: the engine layer generates whole batches, so the
first byte arrives when the whole completion is ready (time-to-first-token equals latency).

Supported request fields: model, messages | prompt, max_tokens (chat: also max_completion_tokens),
temperature, top_p, stop, seed, n=1, stream, logprobs (chat: + top_logprobs), user. Others get a 400
naming them. Sampling fields are bounded by the engine layer's `SamplingParams` (seed 0..2**63-1, non-empty
stop strings) and by the engine (max_tokens within the context, the prompt's tokens within the vocabulary),
and list sizes by `HTTPConfig` (messages, stop strings): every violation is a 400 naming the field.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayflow.llm import Generation, Prompt, SamplingParams
from rayflow.serving.guards import HTTPConfig, bad_request, check_count


@dataclass(frozen=True)
class Completed:
    """One completion: the generation (None when the engine refused the prompt, with `error` saying why and
    `error_field` which request field is at fault: "prompt" or a sampling field), the prompt's token count
    where the backend knows it, and the text cut into per-token stream pieces."""

    generation: Generation | None
    prompt_tokens: int | None = None
    pieces: list[str] = field(default_factory=list)
    error: str | None = None
    error_field: str = "prompt"


class CompletionBackend(Protocol):
    model_name: str

    async def complete(self, prompt: Prompt, params: SamplingParams, stream: bool = False) -> Completed: ...


def stream_pieces(text: str, token_ids: Sequence[int], tokenizer) -> list[str]:
    """`text` cut at token boundaries (by incremental decoding); the pieces always join back to `text`."""
    if tokenizer is None or not token_ids:
        return [text] if text else []
    pieces, sent = [], 0
    for i in range(1, len(token_ids) + 1):
        upto = min(len(tokenizer.decode(token_ids[:i], skip_special_tokens=True)), len(text))
        if upto > sent:
            pieces.append(text[sent:upto])
            sent = upto
    if sent < len(text):
        pieces.append(text[sent:])
    return pieces


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] = Field(1, description="one choice per request")
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[int]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: Literal[False] = Field(False, description="prompt echo is not supported")


def _sampling(request: _OpenAIRequest, max_tokens: int, logprobs: int | None, names: dict[str, str],
              max_stop: int) -> SamplingParams:  # fmt: skip
    """The request's `SamplingParams`; a value they refuse is a 400 naming the request field (`names` maps
    sampling fields to request fields where they differ)."""
    stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    check_count(stop, "stop", max_stop)
    try:
        return SamplingParams(temperature=request.temperature, top_p=request.top_p, max_tokens=max_tokens,
                              stop=tuple(stop), seed=request.seed, logprobs=logprobs)  # fmt: skip
    except ValidationError as err:
        raise RequestValidationError([
            {**e, "loc": ("body", names.get(str(e["loc"][0]), e["loc"][0]), *e["loc"][1:])}
            for e in err.errors(include_url=False, include_context=False)
        ]) from None  # fmt: skip


def _usage(done: Completed) -> dict:
    completion = len(done.generation.token_ids)
    prompt = done.prompt_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(chunks: list[dict]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _chat_logprobs(gen: Generation) -> dict | None:
    if gen.logprobs is None:
        return None
    return {"content": [
        {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
         "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode())} for k, v in t.top.items()]}
        for t in gen.logprobs
    ]}  # fmt: skip


def _completion_logprobs(gen: Generation) -> dict | None:
    if gen.logprobs is None:
        return None
    offsets, at = [], 0
    for t in gen.logprobs:
        offsets.append(at)
        at += len(t.token)
    return {"tokens": [t.token for t in gen.logprobs], "token_logprobs": [t.logprob for t in gen.logprobs],
            "top_logprobs": [dict(t.top) for t in gen.logprobs], "text_offset": offsets}  # fmt: skip


def add_openai_routes(
    app: FastAPI,
    backend: CompletionBackend,
    auth,
    default_max_tokens: int = 256,
    limits: HTTPConfig | None = None,
) -> None:
    """Add the OpenAI-compatible routes to `app`; `auth` is a FastAPI dependency (see `guards.bearer_auth`),
    `limits` the list-size limits (messages, stop strings) of the app's `HTTPConfig`."""
    limits = limits or HTTPConfig()

    def check_model(name: str) -> None:
        if name != backend.model_name:
            raise bad_request(f"model: the model {name!r} does not exist; this server has {backend.model_name!r}",
                              "model", 404)  # fmt: skip

    async def run(prompt: Prompt, params: SamplingParams, field_name: str, stream: bool) -> Completed:
        done = await backend.complete(prompt, params, stream)
        if done.error is not None:
            param = field_name if done.error_field == "prompt" else done.error_field
            raise bad_request(f"{param}: {done.error}", param)
        return done

    @app.get("/v1/models", dependencies=[auth])
    async def models() -> dict:
        card = {"id": backend.model_name, "object": "model", "created": 0, "owned_by": "rayflow"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", dependencies=[auth])
    async def chat(request: ChatRequest):
        check_model(request.model)
        check_count(request.messages, "messages", limits.max_messages)
        max_tokens = request.max_completion_tokens or request.max_tokens or default_max_tokens
        top = (request.top_logprobs or 0) if request.logprobs else None
        names = {"logprobs": "top_logprobs",
                 "max_tokens": "max_completion_tokens" if request.max_completion_tokens else "max_tokens"}  # fmt: skip
        params = _sampling(request, max_tokens, top, names, limits.max_stop)
        done = await run([m.model_dump() for m in request.messages], params, "messages", request.stream)
        gen, rid, created = done.generation, f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": created, "model": backend.model_name}
        if not request.stream:
            choice = {"index": 0, "message": {"role": "assistant", "content": gen.text},
                      "finish_reason": gen.finish_reason, "logprobs": _chat_logprobs(gen)}  # fmt: skip
            return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(done)}
        chunk = {**head, "object": "chat.completion.chunk"}

        def delta(d: dict, finish: str | None = None) -> dict:
            return {**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}]}

        chunks = [delta({"role": "assistant", "content": ""})]
        chunks += [delta({"content": piece}) for piece in done.pieces]
        chunks.append(delta({}, gen.finish_reason))
        if (request.stream_options or {}).get("include_usage"):
            chunks.append({**chunk, "choices": [], "usage": _usage(done)})
        return _sse(chunks)

    @app.post("/v1/completions", dependencies=[auth])
    async def completions(request: CompletionRequest):
        check_model(request.model)
        params = _sampling(request, request.max_tokens, request.logprobs, {}, limits.max_stop)
        done = await run(request.prompt, params, "prompt", request.stream)
        gen = done.generation
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": backend.model_name}  # fmt: skip
        if not request.stream:
            choice = {"index": 0, "text": gen.text, "finish_reason": gen.finish_reason,
                      "logprobs": _completion_logprobs(gen)}  # fmt: skip
            return {**head, "choices": [choice], "usage": _usage(done)}

        def piece(text: str, finish: str | None = None) -> dict:
            return {
                **head,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            }

        chunks = [piece(p) for p in done.pieces] + [piece("", gen.finish_reason)]
        if (request.stream_options or {}).get("include_usage"):
            chunks.append({**head, "choices": [], "usage": _usage(done)})
        return _sse(chunks)
