"""The `openai` engine backend: any OpenAI-compatible server through the official `openai` client.

Chat messages go to `/v1/chat/completions`, strings and token ids to `/v1/completions`. Requests of one
batch run concurrently (`max_concurrency`); `stream` relays the server's own stream (`stream: true`). `Generation.token_ids` is empty: the API returns text only.

Scoring needs prompt log-probs, which chat endpoints never return. vLLM's `/v1/completions` does with
`echo=True, logprobs=0`; this backend sends `prompt_ids + completion_ids` as a token-id prompt so the
boundary is exact, which needs the model's tokenizer locally (`engine.tokenizer`, or a local `engine.model`).

Refusals: an empty prompt, text that is not valid Unicode, or a scoring pair over `engine.max_model_len`
(when set), is rejected here; every
other check is the server's, and a request it answers with HTTP 400 becomes a `PromptRejected` for that
prompt alone (vLLM's server follows the rule in `rayflow.llm.prompts`: it refuses prompts that leave no room
in the context and caps max_tokens to what is left). Connection errors, timeouts, 408, 429 and 5xx are
retried with exponential backoff and jitter (`rayflow.retry`), so a replica restart does not fail a batch;
when the retries run out, and on any other HTTP error (auth, unknown model), the call raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from rayflow.llm.backends import missing_backend
from rayflow.llm.prompts import load_tokenizer, scoring_inputs, text_refusal
from rayflow.llm.types import (
    Completion,
    Delta,
    EngineConfig,
    EngineError,
    Generation,
    Prompt,
    PromptRejected,
    SamplingParams,
    Scored,
    TokenLogprob,
)
from rayflow.retry import call_with_retries


class OpenAIEngine:
    """`Engine` over an OpenAI-compatible HTTP server."""

    def __init__(self, config: EngineConfig):
        try:
            import openai
        except ImportError as err:
            raise missing_backend("openai", "openai", err) from err
        self._openai = openai
        self.config = config
        self.model_name = config.server_model or config.model
        self.client = openai.OpenAI(
            base_url=config.base_url,
            api_key=os.environ.get(config.api_key_env) or "EMPTY",
            timeout=config.request_timeout_s,
            max_retries=0,  # retried by `_create`, with the same policy as every rayflow client
        )
        self._tokenizer = None

    @property
    def tokenizer(self):
        """Loaded on first use: plain chat generation works against remote models with no local files."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config)
        return self._tokenizer

    def _create(self, create, **request):
        """`create(**request)` (an `openai` client method), retried after transient failures."""
        return call_with_retries(lambda: create(**request), f"{self.config.base_url} ({self.model_name})")

    def _map(self, fn, items):
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
            return list(pool.map(fn, items))

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Generation | PromptRejected]:
        """Continue each prompt; returns, per prompt and in order, a `Generation` or a `PromptRejected`."""
        params = params or SamplingParams()
        for p in prompts:
            if not isinstance(p, (str, list)):
                raise TypeError(
                    f"a prompt is a str or a list (messages or token ids), not {type(p).__name__}"
                )
        return self._map(lambda p: self._generate_one(p, params), prompts)

    def _generate_one(self, prompt: Prompt, params: SamplingParams) -> Generation | PromptRejected:
        reason = "the prompt is empty" if not prompt else text_refusal(prompt)
        if reason:
            return PromptRejected(reason)
        try:
            return self._request_generation(prompt, params)
        except self._openai.BadRequestError as err:
            return _refused(err)

    def _request(self, prompt: Prompt, params: SamplingParams) -> tuple[bool, object, dict]:
        """(is chat, the client method, its arguments) for one generation request."""
        common = {
            "model": self.model_name,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "stop": list(params.stop) or None,
            "seed": params.seed if params.seed is not None else self.config.seed,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        # vLLM's (and rayflow's) extensions, sent only when set: other servers may refuse unknown fields.
        extra = {"top_k": params.top_k if params.top_k > 0 else None, "min_tokens": params.min_tokens or None,
                 "repetition_penalty": params.repetition_penalty if params.repetition_penalty != 1.0 else None}  # fmt: skip
        extra = {k: v for k, v in extra.items() if v is not None}
        if extra:
            common["extra_body"] = extra
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
            if params.logprobs is not None:
                common.update(logprobs=True, top_logprobs=params.logprobs)
            return True, self.client.chat.completions.create, {"messages": prompt, **common}
        if params.logprobs is not None:
            common.update(logprobs=params.logprobs)
        return False, self.client.completions.create, {"prompt": prompt, **common}

    def _request_generation(self, prompt: Prompt, params: SamplingParams) -> Generation:
        is_chat, create, request = self._request(prompt, params)
        choice = self._create(create, **request).choices[0]
        text = (choice.message.content or "") if is_chat else choice.text
        token_lps = _chat_logprobs(choice.logprobs) if is_chat else _completion_logprobs(choice.logprobs)
        return Generation(
            text, [], _finish(choice.finish_reason), _drop_eos(token_lps, text, choice.finish_reason)
        )

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None
    ) -> Iterator[Delta | PromptRejected]:
        """Continue one prompt with the server's own stream (`stream: true`), yielding each chunk's text (and
        log-probs when asked) as a `Delta` as it arrives, then a last one with the finish reason; or one
        `PromptRejected` for a prompt refused here or with an HTTP 400."""
        params = params or SamplingParams()
        reason = "the prompt is empty" if not prompt else text_refusal(prompt)
        if reason:
            yield PromptRejected(reason)
            return
        is_chat, create, request = self._request(prompt, params)
        try:
            chunks = self._create(create, stream=True, **request)
        except self._openai.BadRequestError as err:
            yield _refused(err)
            return
        finish = None
        with chunks:
            for chunk in chunks:
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = (choice.delta.content or "") if is_chat else choice.text
                token_lps = (
                    _chat_logprobs(choice.logprobs) if is_chat else _completion_logprobs(choice.logprobs)
                )
                finish = choice.finish_reason or finish
                token_lps = _drop_eos(token_lps, text, choice.finish_reason)
                if text or token_lps:
                    yield Delta(text, [], token_lps)
        yield Delta("", [], [] if params.logprobs is not None else None, _finish(finish))

    def score(
        self, prompts: Sequence[Prompt], completions: Sequence[Completion], top_logprobs: int = 0
    ) -> list[Scored | PromptRejected]:
        """Per-token log-probs of each completion via `/v1/completions` with echo (vLLM and rayflow servers),
        or a `PromptRejected` per pair refused here or by the server; `top_logprobs=k` also returns the k
        likeliest tokens at each completion position."""
        if not self.config.echo_logprobs:
            raise EngineError(
                "the openai backend cannot score with this server: chat endpoints return no prompt log-probs. "
                "Point engine.base_url at a vLLM server (its /v1/completions echoes prompt log-probs) and set "
                "engine.echo_logprobs=true, or use the vllm/hf backends."
            )
        pairs = scoring_inputs(self.tokenizer, prompts, completions, self.config.max_model_len, None)
        return self._map(lambda pair: self._score_one(pair, top_logprobs), pairs)

    def _score_one(
        self, pair: tuple[list[int], list[int]] | PromptRejected, top_logprobs: int
    ) -> Scored | PromptRejected:
        if isinstance(pair, PromptRejected):
            return pair
        p, c = pair
        try:
            choice = self._create(
                self.client.completions.create,
                model=self.model_name, prompt=p + c, echo=True, logprobs=top_logprobs, max_tokens=1,
                temperature=0.0,
            ).choices[0]  # fmt: skip
        except self._openai.BadRequestError as err:
            # Also what a server that cannot echo prompt log-probs answers: then every pair says so.
            return _refused(err)
        values = (choice.logprobs.token_logprobs if choice.logprobs else None) or []
        if len(values) < len(p) + len(c):
            raise EngineError(
                f"the server at {self.config.base_url} returned {len(values)} echoed log-probs for a "
                f"{len(p) + len(c)}-token prompt; it does not support prompt log-probs"
            )
        top = None
        if top_logprobs:  # the server lists the token itself beside the top k: keep the k likeliest
            tops = choice.logprobs.top_logprobs[len(p) : len(p) + len(c)]
            top = [dict(sorted((t or {}).items(), key=lambda kv: -kv[1])[:top_logprobs]) for t in tops]
        return Scored(
            prompt_len=len(p),
            token_ids=list(c),
            logprobs=[float(v) for v in values[len(p) : len(p) + len(c)]],
            top=top,
        )

    def check_health(self) -> None:
        """The server keeps its own health; a client has nothing to check until it calls."""

    def close(self) -> None:
        self.client.close()


def _refused(err) -> PromptRejected:
    """An HTTP 400 for one prompt: the server refused that prompt, in its own words."""
    return PromptRejected(f"the server refused the prompt (HTTP 400): {err.message}")


def _chat_logprobs(logprobs) -> list[TokenLogprob] | None:
    """A chat choice's (or chunk's) log-probs; token ids are unknown over HTTP (-1)."""
    if logprobs is None or logprobs.content is None:
        return None
    return [TokenLogprob(-1, t.token, t.logprob, {a.token: a.logprob for a in t.top_logprobs or []})
            for t in logprobs.content]  # fmt: skip


def _completion_logprobs(logprobs) -> list[TokenLogprob] | None:
    """A completion choice's (or chunk's) log-probs; token ids are unknown over HTTP (-1)."""
    if logprobs is None or not logprobs.tokens:
        return None
    tops = logprobs.top_logprobs or [{}] * len(logprobs.tokens)
    return [TokenLogprob(-1, t, v, dict(top or {}))
            for t, v, top in zip(logprobs.tokens, logprobs.token_logprobs, tops)]  # fmt: skip


def _drop_eos(
    token_lps: list[TokenLogprob] | None, text: str, reason: str | None
) -> list[TokenLogprob] | None:
    """vLLM's /v1/completions reports the end-of-sequence token's log-prob; the other backends do not."""
    if token_lps and reason == "stop" and token_lps[-1].token and not text.endswith(token_lps[-1].token):
        return token_lps[:-1]
    return token_lps


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"
