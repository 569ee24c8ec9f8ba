"""OpenAI-compatible routes over any completion backend, accepting what vLLM's OpenAI server accepts:
`/v1/chat/completions`, `/v1/completions` (both with `stream: true`), `/v1/models` and `/v1/models/{id}`, so
the official `openai` client, lm-eval's `local-completions`/`local-chat-completions` models and other OpenAI
tooling talk to rayflow.

The backend completes one prompt at a time (`complete(prompt, params, ...) -> Completed`); the LLM
deployment batches concurrent calls with `@serve.batch`. `stream: true` is real token streaming: the
backend's `stream` relays the engine's deltas (`Engine.stream`: incremental detokenisation, stop strings
held back until settled) and each is sent as a server-sent event as soon as the engine writes it, with its
log-probs when asked and usage at the end (`stream_options.include_usage`). A prompt the engine refuses is
a 400 before the stream starts; an engine failure mid-stream ends it with an `{"error": ...}` event. With
several prompts (`/v1/completions`), their streams are sent one after another, in order.

Request fields, as vLLM treats them:

* honoured: model, messages | prompt, max_tokens (chat: also max_completion_tokens), temperature, top_p,
  top_k, presence_penalty, frequency_penalty, repetition_penalty, min_tokens, seed, stop, n=1, stream,
  stream_options.include_usage, logprobs (chat: + top_logprobs), echo (completions), user;
* messages: roles system, developer, user, assistant and tool (passed to the model's chat template as
  they are, like vLLM), content as a string or a list of `{"type": "text", "text": ...}` parts, `name`;
* prompt: a string, a list of strings, a list of token ids, or a list of token-id lists (one choice each);
* `echo` returns the prompt before the completion, and with `logprobs` the prompt's log-probs too (read
  through the engine's `score`), so log-likelihood clients (lm-eval, rayflow's `openai` backend) work;
  `max_tokens: 0` with `echo` scores the prompt without generating;
* refused with a 400 naming the field: `tools`/`tool_choice` (no tool calling), a `response_format` other
  than text, `logit_bias`, `n`/`best_of` above 1, `suffix`;
* any other field is ignored with a logged warning, as vLLM does.

Sampling fields are bounded by the engine layer's `SamplingParams` (seed 0..2**63-1, non-empty stop
strings, min_tokens <= max_tokens) and by the engine (max_tokens within the context, the prompt's tokens
within the vocabulary), and list sizes by `HTTPConfig` (messages, stop strings, prompts per request):
every violation is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayflow.llm import Delta, Generation, Prompt, PromptRejected, SamplingParams, TokenLogprob
from rayflow.serving.guards import HTTPConfig, bad_request, check_count, error_body

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    """One completion: the generation (None when the engine refused the prompt, with `error` saying why and
    `error_field` which request field is at fault: "prompt" or a sampling field), the prompt's token count
    where the backend knows it, and, when asked, the echoed prompt (`prompt_text`) with its log-probs
    (`prompt_logprobs`: None for the first token, which has no context)."""

    generation: Generation | None
    prompt_tokens: int | None = None
    error: str | None = None
    error_field: str = "prompt"
    prompt_text: str | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None


class CompletionBackend(Protocol):
    model_name: str

    async def complete(
        self, prompt: Prompt, params: SamplingParams, echo: bool = False, generate: bool = True
    ) -> Completed:
        """Complete `prompt`; `echo` returns the prompt (with log-probs when `params.logprobs` is set),
        `generate=False` only echoes."""
        ...

    def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta | PromptRejected]:
        """`prompt`'s continuation as the engine writes it (`Engine.stream`): `Delta`s, or one
        `PromptRejected`."""
        ...


class _OpenAIRequest(BaseModel):
    # Unknown fields are kept (to be named in a warning) and otherwise ignored, as vLLM's server does.
    model_config = ConfigDict(extra="allow")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1, description="-1 or 0 = all tokens (vLLM's extension)")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="vLLM's extension; 1 = off")
    min_tokens: int = Field(0, ge=0, description="vLLM's extension")
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    best_of: int | None = None
    logit_bias: dict | None = None
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = None

    def refuse_unsupported(self) -> None:
        """A 400 naming the first field asking for what this server cannot do; a warning naming unknown ones."""
        if self.n != 1:
            raise bad_request("n: this server returns one choice per prompt (n=1)", "n")
        if self.best_of not in (None, 1):
            raise bad_request("best_of: this server returns one choice per prompt (best_of=1)", "best_of")
        if self.logit_bias:
            raise bad_request("logit_bias: not supported by this server", "logit_bias")
        if self.model_extra:
            logger.warning("%s: ignoring request fields the server does not know: %s",
                           type(self).__name__, ", ".join(sorted(self.model_extra)))  # fmt: skip


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # tool_calls, tool_call_id, ...: accepted, not used

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None
    name: str | None = None

    def text(self, where: str) -> str:
        """The content as one string; a part that is not text is a 400 naming it (`where` = this message)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        texts = []
        for j, part in enumerate(self.content):
            kind = part.get("type")
            if kind != "text":
                raise bad_request(f"{where}.content[{j}].type: only text parts are supported, not {kind!r}",
                                  f"{where}.content[{j}].type")  # fmt: skip
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{where}.content[{j}].text: a text part needs a string `text`",
                                  f"{where}.content[{j}].text")  # fmt: skip
            texts.append(part["text"])
        return "".join(texts)


class ChatRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list | None = None
    tool_choice: str | dict | None = None
    response_format: dict | None = None

    def refuse_unsupported(self) -> None:
        if self.tools:
            raise bad_request("tools: tool calling is not supported by this server", "tools")
        if self.tool_choice not in (None, "none"):
            raise bad_request("tool_choice: tool calling is not supported by this server", "tool_choice")
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise bad_request(
                f"response_format: only type 'text' is supported, not {kind!r}", "response_format"
            )
        super().refuse_unsupported()

    def prompt(self) -> list[dict]:
        """The messages as the engine layer's chat prompt: role, content text, and name where given."""
        out = []
        for i, m in enumerate(self.messages):
            message = {"role": m.role, "content": m.text(f"messages[{i}]")}
            if m.name is not None:
                message["name"] = m.name
            out.append(message)
        return out


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=0, description="0 only with echo: score the prompt, generate nothing")
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None

    def refuse_unsupported(self) -> None:
        if self.suffix:
            raise bad_request("suffix: not supported by this server", "suffix")
        if self.max_tokens == 0 and not self.echo:
            raise bad_request("max_tokens: must be at least 1 (0 only with echo)", "max_tokens")
        super().refuse_unsupported()

    def prompts(self) -> list[Prompt]:
        """One engine prompt per choice: a string or token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        if not p:
            raise bad_request("prompt: the prompt list is empty", "prompt")
        return list(p)


def _sampling(request: _OpenAIRequest, max_tokens: int, logprobs: int | None, names: dict[str, str],
              max_stop: int) -> SamplingParams:  # fmt: skip
    """The request's `SamplingParams`; a value they refuse is a 400 naming the request field (`names` maps
    sampling fields to request fields where they differ)."""
    stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    check_count(stop, "stop", max_stop)
    try:
        return SamplingParams(temperature=request.temperature, top_p=request.top_p, max_tokens=max_tokens,
                              stop=tuple(stop), seed=request.seed, logprobs=logprobs, top_k=request.top_k,
                              presence_penalty=request.presence_penalty,
                              frequency_penalty=request.frequency_penalty,
                              repetition_penalty=request.repetition_penalty,
                              min_tokens=request.min_tokens)  # fmt: skip
    except ValidationError as err:
        raise RequestValidationError([
            {**e, "loc": ("body", names.get(str(e["loc"][0]), e["loc"][0]) if e["loc"] else "body",
                          *e["loc"][1:])}
            for e in err.errors(include_url=False, include_context=False)
        ]) from None  # fmt: skip


def _usage(done: Sequence[Completed]) -> dict:
    completion = sum(len(d.generation.token_ids) for d in done)
    prompt = sum(d.prompt_tokens or 0 for d in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _event(chunk: dict) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"


def _sse(events: AsyncIterator[str], streams: Sequence[OpenStream]) -> StreamingResponse:
    """`events` (each a `data: ...` block) as server-sent events; an exception in the middle of the stream
    ends it with an OpenAI error event, as vLLM's server does; `[DONE]` closes it. The engine `streams` the
    events come from are stopped if the client goes away first."""

    async def body() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except Exception as err:
            logger.exception("a stream failed part-way")
            yield _event(error_body(f"{type(err).__name__}: {err}", 500))
        finally:
            for stream in streams:
                await stream.aclose()
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


def _chat_entries(tokens: Sequence[TokenLogprob]) -> list[dict]:
    return [
        {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
         "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode())} for k, v in t.top.items()]}
        for t in tokens
    ]  # fmt: skip


def _completion_logprobs(tokens: Sequence[TokenLogprob | None], start: int = 0) -> dict:
    """The completions API's log-probs of `tokens`; None (the echoed prompt's first token) has no log-prob.
    Each position's top alternatives include the token itself, as vLLM reports them."""
    offsets, at = [], start
    for t in tokens:
        offsets.append(at)
        at += len(t.token) if t is not None else 0
    return {"tokens": [t.token if t is not None else "" for t in tokens],
            "token_logprobs": [t.logprob if t is not None else None for t in tokens],
            "top_logprobs": [{**t.top, t.token: t.logprob} if t is not None else None for t in tokens],
            "text_offset": offsets}  # fmt: skip


class OpenStream:
    """A backend stream whose first delta is in; iterate it once. `aclose` stops the engine's generation when
    the stream is left before its end (the client went away, a later prompt was refused)."""

    def __init__(self, first: Delta, deltas: AsyncIterator[Delta]):
        self.first = first
        self.deltas = deltas
        self.ended = False

    async def __aiter__(self) -> AsyncIterator[Delta]:
        yield self.first
        async for delta in self.deltas:
            yield delta
        self.ended = True

    async def aclose(self) -> None:
        if self.ended:
            return
        self.ended = True
        if hasattr(self.deltas, "cancel"):  # a Serve handle's response generator
            self.deltas.cancel()
        else:
            await self.deltas.aclose()


def add_openai_routes(
    app: FastAPI,
    backend: CompletionBackend,
    auth,
    default_max_tokens: int = 256,
    limits: HTTPConfig | None = None,
) -> None:
    """Add the OpenAI-compatible routes to `app`; `auth` is a FastAPI dependency (see `guards.bearer_auth`),
    `limits` the list-size limits (messages, stop strings, prompts per request) of the app's `HTTPConfig`."""
    limits = limits or HTTPConfig()
    card = {"id": backend.model_name, "object": "model", "created": 0, "owned_by": "rayflow"}

    def check_model(name: str) -> None:
        if name != backend.model_name:
            raise bad_request(f"model: the model {name!r} does not exist; this server has {backend.model_name!r}",
                              "model", 404)  # fmt: skip

    def refused(field_name: str, reason: str, at: str):
        param = field_name if at == "prompt" else at
        return bad_request(f"{param}: {reason}", param)

    async def run(prompt: Prompt, params: SamplingParams, field_name: str, **kwargs) -> Completed:
        done = await backend.complete(prompt, params, **kwargs)
        if done.error is not None:
            raise refused(field_name, done.error, done.error_field)
        return done

    async def open_stream(prompt: Prompt, params: SamplingParams, field_name: str) -> OpenStream:
        """The backend's stream, once its first answer is in: a refused prompt is a 400 before any byte."""
        deltas = backend.stream(prompt, params)
        first = await anext(deltas)
        if isinstance(first, PromptRejected):
            raise refused(field_name, first.reason, first.field)
        return OpenStream(first, deltas)

    @app.get("/v1/models", dependencies=[auth])
    async def models() -> dict:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}", dependencies=[auth])
    async def model(model_id: str) -> dict:
        if model_id != backend.model_name:
            raise bad_request(f"model: the model {model_id!r} does not exist; this server has "
                              f"{backend.model_name!r}", "model", 404)  # fmt: skip
        return card

    @app.post("/v1/chat/completions", dependencies=[auth])
    async def chat(request: ChatRequest):
        check_model(request.model)
        request.refuse_unsupported()
        check_count(request.messages, "messages", limits.max_messages)
        max_tokens = request.max_completion_tokens or request.max_tokens or default_max_tokens
        top = (request.top_logprobs or 0) if request.logprobs else None
        names = {"logprobs": "top_logprobs",
                 "max_tokens": "max_completion_tokens" if request.max_completion_tokens else "max_tokens"}  # fmt: skip
        params = _sampling(request, max_tokens, top, names, limits.max_stop)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": created, "model": backend.model_name}
        if not request.stream:
            done = await run(request.prompt(), params, "messages")
            gen = done.generation
            logprobs = {"content": _chat_entries(gen.logprobs)} if gen.logprobs is not None else None
            choice = {"index": 0, "message": {"role": "assistant", "content": gen.text},
                      "finish_reason": gen.finish_reason, "logprobs": logprobs}  # fmt: skip
            return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage([done])}
        deltas = await open_stream(request.prompt(), params, "messages")
        chunk = {**head, "object": "chat.completion.chunk"}

        def delta(d: dict, finish: str | None = None, lps: list[TokenLogprob] | None = None) -> str:
            logprobs = {"content": _chat_entries(lps)} if lps else None
            return _event({
                **chunk,
                "choices": [{"index": 0, "delta": d, "finish_reason": finish, "logprobs": logprobs}],
            })  # fmt: skip

        async def events() -> AsyncIterator[str]:
            yield delta({"role": "assistant", "content": ""})
            tokens, finish, prompt_tokens = 0, "length", None
            async for d in deltas:
                tokens += len(d.token_ids)
                if d.text or d.logprobs:
                    yield delta({"content": d.text}, lps=d.logprobs if top is not None else None)
                if d.finish_reason is not None:
                    finish, prompt_tokens = d.finish_reason, d.prompt_tokens
            yield delta({}, finish)
            if (request.stream_options or {}).get("include_usage"):
                usage = {"prompt_tokens": prompt_tokens or 0, "completion_tokens": tokens,
                         "total_tokens": (prompt_tokens or 0) + tokens}  # fmt: skip
                yield _event({**chunk, "choices": [], "usage": usage})

        return _sse(events(), [deltas])

    @app.post("/v1/completions", dependencies=[auth])
    async def completions(request: CompletionRequest):
        check_model(request.model)
        request.refuse_unsupported()
        prompts = request.prompts()
        check_count(prompts, "prompt", limits.max_items)
        params = _sampling(request, max(request.max_tokens, 1), request.logprobs, {}, limits.max_stop)
        where = (lambda i: "prompt") if len(prompts) == 1 else (lambda i: f"prompt[{i}]")
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": backend.model_name}  # fmt: skip
        with_logprobs = request.logprobs is not None
        if not request.stream:
            done = await asyncio.gather(*(
                run(p, params, where(i), echo=request.echo, generate=request.max_tokens > 0)
                for i, p in enumerate(prompts)
            ))  # fmt: skip
            choices = []
            for i, d in enumerate(done):
                gen, echoed = d.generation, d.prompt_text if request.echo else ""
                logprobs = None
                if with_logprobs:
                    tokens = (d.prompt_logprobs or []) + (gen.logprobs or [])
                    logprobs = _completion_logprobs(tokens)
                choices.append({"index": i, "text": echoed + gen.text, "finish_reason": gen.finish_reason,
                                "logprobs": logprobs})  # fmt: skip
            return {**head, "choices": choices, "usage": _usage(done)}

        echoes = [None] * len(prompts)
        if request.echo:
            echoes = await asyncio.gather(*(
                run(p, params, where(i), echo=True, generate=False) for i, p in enumerate(prompts)
            ))  # fmt: skip
        # Every prompt's stream is opened (so a refused one is a 400) before the first byte goes out.
        streams = []
        if request.max_tokens > 0:
            try:
                for i, p in enumerate(prompts):
                    streams.append(await open_stream(p, params, where(i)))
            except Exception:
                for stream in streams:
                    await stream.aclose()
                raise

        def piece(i: int, text: str, finish: str | None = None, lps: list | None = None, at: int = 0) -> str:
            logprobs = _completion_logprobs(lps, at) if lps else None
            return _event({
                **head,
                "choices": [{"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs}],
            })  # fmt: skip

        async def events() -> AsyncIterator[str]:
            prompt_tokens = completion_tokens = 0
            for i in range(len(prompts)):
                at, finish, echo = 0, "length", echoes[i]
                if echo is not None:
                    yield piece(i, echo.prompt_text, lps=echo.prompt_logprobs if with_logprobs else None)
                    at = len(echo.prompt_text)
                    if not streams:  # echo only: the prompt is all there is to count
                        prompt_tokens += echo.prompt_tokens or 0
                if streams:
                    async for d in streams[i]:
                        completion_tokens += len(d.token_ids)
                        if d.text or d.logprobs:
                            yield piece(i, d.text, lps=d.logprobs if with_logprobs else None, at=at)
                            at += len(d.text)
                        if d.finish_reason is not None:
                            finish, prompt_tokens = d.finish_reason, prompt_tokens + (d.prompt_tokens or 0)
                yield piece(i, "", finish)
            if (request.stream_options or {}).get("include_usage"):
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
                yield _event({**head, "choices": [], "usage": usage})

        return _sse(events(), streams)
