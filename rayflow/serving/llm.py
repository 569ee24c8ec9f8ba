"""The generic LLM deployment: any model the engine layer loads (an HF checkpoint, rayflow's own trained
ones, `tiny:<size>`), on any backend, batched with `@serve.batch`; and its OpenAI-compatible HTTP front.

    config = LLMServerConfig(engine=EngineConfig(backend="vllm", model="/ckpt"), served_model_name="mine")
    serve.run(OpenAIServer.bind(LLMServer.bind(config), config))
    # POST /v1/chat/completions, /v1/completions; GET /v1/models, /healthz

`LLMServer` has no HTTP routes of its own (Serve allows one FastAPI ingress per application), so any
ingress composes it: `await handle.complete.remote(prompt, params)` returns a `Completed`,
`from_deployment(handle)` turns the handle into the judges' `Generate` function (one `generate_many` call
per batch of prompts), and `stream_from_deployment(handle)` into a `Stream` of the engine's deltas
(`LLMServer.stream`: real token streaming, each delta sent as the engine writes it). Concurrent prompts,
across calls and callers, are regrouped into batches of up to `max_batch_size` prompts (waiting at most
`batch_wait_timeout_s` for a batch to fill); each batch is one `engine.generate` call per distinct sampling
setting, run on one engine thread so the replica keeps accepting requests meanwhile. A stream holds that
thread from its first token to its last: batches wait for it, and streams run one after another.

Faults stay with their request: a prompt the engine refuses is that request's 400; should an engine call
raise, its prompts are retried one at a time so only the request that causes it fails (a 500 on the
OpenAI routes). The replica's health check (Serve calls it every `health_check_period_s`; `/healthz` asks
it too) fails when the engine is dead or broken (`Engine.check_health`) or stuck: requests waiting and no
engine call finished for `stuck_after_s`. Serve then replaces the replica, and `/healthz` answers 503 until
the new one serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from fastapi.responses import JSONResponse
from pydantic import Field
from ray import serve
from ray.exceptions import RayError

from rayflow.config import Config
from rayflow.eval.safety.llm import Generate
from rayflow.llm import (
    Delta,
    EngineConfig,
    EngineError,
    Generation,
    Prompt,
    PromptRejected,
    SamplingParams,
    Stream,
    TokenLogprob,
    astream,
    build_engine,
    prompt_token_ids,
)
from rayflow.serving.guards import HTTPConfig, bearer_auth, guarded_app
from rayflow.serving.openai_api import Completed, add_openai_routes

logger = logging.getLogger(__name__)


class LLMServerConfig(Config):
    """One served model."""

    engine: EngineConfig = EngineConfig(
        backend="vllm", model="tiny:tiny", dtype="float32", max_model_len=1024
    )
    served_model_name: str | None = Field(None, description="the `model` clients send; None = engine.model")
    max_batch_size: int = Field(32, ge=1, description="prompts per engine call; 1 = one request per forward")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="longest wait for a batch to fill")
    default_max_tokens: int = Field(256, ge=1, description="chat completions without max_tokens")
    stuck_after_s: float = Field(
        300.0, gt=0, description="health fails when requests wait this long with no engine call finishing"
    )
    http: HTTPConfig = HTTPConfig()

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.engine.model


class EngineWatch:
    """Whether an engine is stuck: requests are waiting on it and it has made no progress (finished a call)
    for longer than `stuck_after_s` seconds. The wait counts from the last call that finished, or from the
    moment the first request arrived at an idle engine."""

    def __init__(self, stuck_after_s: float, clock=time.monotonic):
        self.stuck_after_s = stuck_after_s
        self.clock = clock
        self.waiting = 0
        self.progress_at = clock()

    def arrive(self) -> None:
        if self.waiting == 0:
            self.progress_at = self.clock()
        self.waiting += 1

    def leave(self) -> None:
        self.waiting -= 1

    def progressed(self) -> None:
        self.progress_at = self.clock()

    def problem(self) -> str | None:
        """Why the engine counts as stuck, or None."""
        idle = self.clock() - self.progress_at
        if self.waiting and idle > self.stuck_after_s:
            return (f"the engine is stuck: {self.waiting} requests waiting and no engine call finished for "
                    f"{idle:.0f} s (stuck_after_s={self.stuck_after_s:g})")  # fmt: skip
        return None


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 1})
class LLMServer:
    def __init__(self, config: LLMServerConfig):
        self.config = config
        self.model_name = self.config.model_name
        # vLLM's engine client is not thread-safe: every engine call runs on this one thread.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.engine = self._thread.submit(build_engine, self.config.engine).result()
        self.tokenizer = local_tokenizer(self.engine)
        self.set_batching(self.config.max_batch_size, self.config.batch_wait_timeout_s)
        self.batch_sizes: Counter[int] = Counter()
        self.engine_s = 0.0  # seconds spent in engine calls since reset_stats (profiling)
        self.watch = EngineWatch(self.config.stuck_after_s)

    async def complete(
        self, prompt: Prompt, params: SamplingParams, echo: bool = False, generate: bool = True
    ) -> Completed:
        """Complete one prompt; concurrent calls share engine batches. `echo` returns the prompt's text and,
        when `params.logprobs` is set, its log-probs (one engine `score` call); `generate=False` only echoes.
        Raises what the engine raised for this prompt alone."""
        echoed: tuple[str, list[TokenLogprob | None] | None, int] | None = None
        if echo:
            echoed = await self._echo(prompt, params.logprobs)
            if isinstance(echoed, PromptRejected):
                return Completed(generation=None, error=echoed.reason, error_field=echoed.field)
        if generate:
            out = await self._generate_batched(prompt, params)
        else:
            out = Generation("", [], "length", [] if params.logprobs is not None else None, echoed[2])
        if isinstance(out, PromptRejected):  # the OpenAI routes answer it with a 400 naming the field
            return Completed(generation=None, error=out.reason, error_field=out.field)
        # The backend counted the prompt's tokens while tokenising it: no second tokenisation here.
        prompt_tokens = (
            out.prompt_tokens if out.prompt_tokens is not None else (echoed[2] if echoed else None)
        )
        if echoed is None:
            return Completed(out, prompt_tokens)
        return Completed(out, prompt_tokens, prompt_text=echoed[0], prompt_logprobs=echoed[1])

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta | PromptRejected]:
        """Yield one prompt's `Delta`s as the engine writes them (`Engine.stream`), or one `PromptRejected`;
        call through `handle.options(stream=True)`. The stream runs on the engine thread from its first token
        to its last, so engine batches of other requests wait for it; a caller that goes away stops it after
        the next token. Raises what the engine raised."""
        self.watch.arrive()
        try:
            async for delta in astream(self.engine, prompt, params, self._thread, self.watch.progressed):
                yield delta
        finally:
            self.watch.leave()

    async def generate_many(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Generation | PromptRejected]:
        """Generate for many prompts sent in one call (the judges' batches: one handle call, not one per
        prompt); they join engine batches with everyone else's. Raises the first exception the engine raised
        for one of them."""
        return list(await asyncio.gather(*(self._generate_batched(p, params) for p in prompts)))

    async def _generate_batched(self, prompt: Prompt, params: SamplingParams) -> Generation | PromptRejected:
        self.watch.arrive()
        try:
            out = await self._batch(prompt, params)
        finally:
            self.watch.leave()
        if isinstance(out, BaseException):
            raise out
        return out

    async def _echo(
        self, prompt: Prompt, top: int | None
    ) -> tuple[str, list[TokenLogprob | None] | None, int] | PromptRejected:
        """The prompt's text, its per-token log-probs (None for the first token; each with the `top` likeliest
        alternatives) when `top` is not None, and its token count."""
        if self.tokenizer is None:
            return PromptRejected(
                "this server has no local tokenizer for its model, so it cannot echo", "echo"
            )
        ids = prompt_token_ids(self.tokenizer, prompt)
        text = prompt if isinstance(prompt, str) else self.tokenizer.decode(ids)
        if top is None:
            return text, None, len(ids)
        if not ids:
            return PromptRejected("the prompt is empty")
        loop = asyncio.get_running_loop()
        self.watch.arrive()
        try:
            [scored] = await loop.run_in_executor(self._thread, self.engine.score, [ids[:1]], [ids[1:]], top)
        finally:
            self.watch.progressed()
            self.watch.leave()
        if isinstance(scored, PromptRejected):
            return scored
        tops = scored.top or [{}] * len(ids[1:])
        tokens = [TokenLogprob(t, self.tokenizer.decode([t]), lp, alt)
                  for t, lp, alt in zip(ids[1:], scored.logprobs, tops)]  # fmt: skip
        return text, [None, *tokens], len(ids)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _batch(
        self, prompts: list[Prompt], params: list[SamplingParams]
    ) -> list[Generation | PromptRejected | Exception]:
        self.batch_sizes[len(prompts)] += 1
        groups: dict[SamplingParams, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p, []).append(i)
        # A prompt the engine refuses comes back as its own PromptRejected; its batch-mates are served. An
        # engine call that raises is retried prompt by prompt, so the exception reaches only its own caller
        # (serve.batch hands a returned exception over as a value; complete() raises it).
        out: list[Generation | PromptRejected | Exception | None] = [None] * len(prompts)
        for p, indices in groups.items():
            try:
                results = await self._generate([prompts[i] for i in indices], p)
            except Exception:
                logger.exception(
                    "an engine call of %d prompts failed; retrying them one by one", len(indices)
                )
                results = [await self._generate_or_error(prompts[i], p) for i in indices]
            for i, gen in zip(indices, results):
                out[i] = gen
        return out

    async def _generate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> list[Generation | PromptRejected]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            return await loop.run_in_executor(self._thread, self.engine.generate, prompts, params)
        finally:
            self.engine_s += time.perf_counter() - start
            self.watch.progressed()

    async def _generate_or_error(
        self, prompt: Prompt, params: SamplingParams
    ) -> Generation | PromptRejected | Exception:
        try:
            [result] = await self._generate([prompt], params)
        except Exception as err:  # noqa: BLE001 - handed to this prompt's caller alone, who raises it
            return err
        return result

    def set_batching(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """Change batching on the live replica (max_batch_size=1: one request per engine call)."""
        self._batch.set_max_batch_size(max_batch_size)
        self._batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def stats(self) -> dict:
        """Engine batches run so far: {"batches": n, "requests": n, "max_batch_size": n, "sizes": {size: count}}."""
        sizes = dict(sorted(self.batch_sizes.items()))
        return {"batches": sum(sizes.values()), "requests": sum(k * v for k, v in sizes.items()),
                "max_batch_size": max(sizes, default=0), "sizes": sizes,
                "engine_s": round(self.engine_s, 3)}  # fmt: skip

    def reset_stats(self) -> None:
        self.batch_sizes.clear()
        self.engine_s = 0.0

    def check_health(self) -> None:
        """Raise when this replica cannot serve: its engine is dead, broken or stuck (Serve replaces it)."""
        self.engine.check_health()
        problem = self.watch.problem()
        if problem:
            raise RuntimeError(problem)


def local_tokenizer(engine):
    """The engine's tokenizer, or None when it has none here (a remote model behind the `openai` backend with
    no local files): the server then serves without token counts or echo."""
    try:
        return getattr(engine, "tokenizer", None)
    except (EngineError, OSError, ValueError) as err:
        logger.warning("no local tokenizer for %r (%s): usage counts no prompt tokens, echo is refused",
                       engine.config.model, err)  # fmt: skip
        return None


class DeploymentBackend:
    """An LLM deployment seen through a handle: a `CompletionBackend` for OpenAI routes on another deployment."""

    def __init__(self, handle, model_name: str):
        self.handle = handle
        self.model_name = model_name

    async def complete(
        self, prompt: Prompt, params: SamplingParams, echo: bool = False, generate: bool = True
    ) -> Completed:
        return await self.handle.complete.remote(prompt, params, echo, generate)

    def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta | PromptRejected]:
        return stream_from_deployment(self.handle)(prompt, params)


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class OpenAIServer:
    """HTTP front of one `LLMServer`: OpenAI-compatible routes (auth, limits from `config.http`) and /healthz."""

    def __init__(self, llm, config: LLMServerConfig):
        self.llm = llm
        self.config = config

    def __serve_build_asgi_app__(self):
        app = guarded_app(f"rayflow LLM: {self.config.model_name}", self.config.http)
        backend = DeploymentBackend(self.llm, self.config.model_name)
        add_openai_routes(app, backend, bearer_auth(self.config.http), self.config.default_max_tokens,
                          self.config.http)  # fmt: skip

        @app.get("/healthz")
        async def healthz():
            return await health_reply(self.llm, {"model": self.config.model_name})

        return app


HEALTH_TIMEOUT_S = 5.0


async def llm_health(handle, timeout_s: float = HEALTH_TIMEOUT_S) -> str | None:
    """None when the LLM deployment answers its health check within `timeout_s` seconds, else the reason.

    Serve holds calls to a replica that is still loading its model, so "no answer in time" means not ready.
    """
    try:
        await asyncio.wait_for(handle.check_health.remote(), timeout_s)
    except TimeoutError:
        return f"the model is not ready: no answer within {timeout_s:g} s (still loading?)"
    except (RayError, RuntimeError) as err:  # a failed or dead replica: reported, the probe itself stands
        return f"the model deployment failed its health check: {type(err).__name__}: {err}"
    return None


async def health_reply(handle, body: dict) -> dict | JSONResponse:
    """`/healthz`: 200 `{"status": "ok", **body}` once the model answers, 503 with the reason before."""
    problem = await llm_health(handle)
    if problem is None:
        return {"status": "ok", **body}
    return JSONResponse({"status": "unavailable", **body, "reason": problem}, status_code=503)


def from_deployment(handle) -> Generate:
    """The judges' `Generate` over an `LLMServer` handle: all prompts of one call go in one handle call, and
    the server batches them with other callers' prompts."""

    async def generate(
        prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Generation | PromptRejected]:
        return await handle.generate_many.remote(list(prompts), params) if prompts else []

    return generate


def stream_from_deployment(handle) -> Stream:
    """A `Stream` over an `LLMServer` handle: the deployment's deltas as it sends them."""

    def stream(prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta | PromptRejected]:
        return handle.options(stream=True).stream.remote(prompt, params)

    return stream
