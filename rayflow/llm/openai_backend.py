"""The `openai` engine backend: any OpenAI-compatible server through the official `openai` client.

Chat messages go to `/v1/chat/completions`, strings and token ids to `/v1/completions`. Requests of one
batch run concurrently (`max_concurrency`). `Generation.token_ids` is empty: the API returns text only.

Scoring needs prompt log-probs, which chat endpoints never return. vLLM's `/v1/completions` does with
`echo=True, logprobs=0`; this backend sends `prompt_ids + completion_ids` as a token-id prompt so the
boundary is exact, which needs the model's tokenizer locally (`engine.tokenizer`, or a local `engine.model`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from rayflow.llm.engine import (
    Completion,
    EngineConfig,
    EngineError,
    Generation,
    Prompt,
    SamplingParams,
    Scored,
    TokenLogprob,
    check_pairs,
    completion_token_ids,
    load_tokenizer,
    missing_backend,
    prompt_token_ids,
)


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
            max_retries=2,
        )
        self._tokenizer = None

    @property
    def tokenizer(self):
        """Loaded on first use: plain chat generation works against remote models with no local files."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config)
        return self._tokenizer

    def _map(self, fn, items):
        with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
            return list(pool.map(fn, items))

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Generation]:
        """Continue each prompt; returns one `Generation` per prompt, in order."""
        params = params or SamplingParams()
        return self._map(lambda p: self._generate_one(p, params), prompts)

    def _generate_one(self, prompt: Prompt, params: SamplingParams) -> Generation:
        common = dict(
            model=self.model_name,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed if params.seed is not None else self.config.seed,
        )
        is_chat = isinstance(prompt, list) and prompt and isinstance(prompt[0], dict)
        if is_chat:
            if params.logprobs is not None:
                common.update(logprobs=True, top_logprobs=params.logprobs)
            choice = self.client.chat.completions.create(messages=prompt, **common).choices[0]
            token_lps = None
            if choice.logprobs is not None and choice.logprobs.content is not None:
                token_lps = [
                    TokenLogprob(-1, t.token, t.logprob, {a.token: a.logprob for a in t.top_logprobs or []})
                    for t in choice.logprobs.content
                ]
            text = choice.message.content or ""
            return Generation(
                text, [], _finish(choice.finish_reason), _drop_eos(token_lps, text, choice.finish_reason)
            )
        if params.logprobs is not None:
            common.update(logprobs=params.logprobs)
        choice = self.client.completions.create(prompt=prompt, **common).choices[0]
        token_lps = None
        if choice.logprobs is not None and choice.logprobs.tokens:
            lp = choice.logprobs
            tops = lp.top_logprobs or [{}] * len(lp.tokens)
            token_lps = [
                TokenLogprob(-1, t, v, dict(top or {}))
                for t, v, top in zip(lp.tokens, lp.token_logprobs, tops)
            ]
        return Generation(
            choice.text,
            [],
            _finish(choice.finish_reason),
            _drop_eos(token_lps, choice.text, choice.finish_reason),
        )

    def score(self, prompts: Sequence[Prompt], completions: Sequence[Completion]) -> list[Scored]:
        """Per-token log-probs of each completion via `/v1/completions` with echo (vLLM servers)."""
        if not self.config.echo_logprobs:
            raise EngineError(
                "the openai backend cannot score with this server: chat endpoints return no prompt log-probs. "
                "Point engine.base_url at a vLLM server (its /v1/completions echoes prompt log-probs) and set "
                "engine.echo_logprobs=true, or use the vllm/hf backends."
            )
        check_pairs(prompts, completions)
        pairs = [
            (prompt_token_ids(self.tokenizer, p), completion_token_ids(self.tokenizer, c))
            for p, c in zip(prompts, completions)
        ]
        for i, (p, _) in enumerate(pairs):
            if not p:
                raise ValueError(f"prompt {i} is empty: the first completion token would have no context")
        return self._map(self._score_one, pairs)

    def _score_one(self, pair: tuple[list[int], list[int]]) -> Scored:
        p, c = pair
        try:
            choice = self.client.completions.create(
                model=self.model_name, prompt=p + c, echo=True, logprobs=0, max_tokens=1, temperature=0.0
            ).choices[0]
        except self._openai.BadRequestError as err:
            raise EngineError(
                f"the server at {self.config.base_url} refused an echo+logprobs completion, so it cannot score "
                f"(set engine.echo_logprobs=false to say so up front): {err}"
            ) from err
        values = (choice.logprobs.token_logprobs if choice.logprobs else None) or []
        if len(values) < len(p) + len(c):
            raise EngineError(
                f"the server at {self.config.base_url} returned {len(values)} echoed log-probs for a "
                f"{len(p) + len(c)}-token prompt; it does not support prompt log-probs"
            )
        return Scored(
            prompt_len=len(p),
            token_ids=list(c),
            logprobs=[float(v) for v in values[len(p) : len(p) + len(c)]],
        )

    def close(self) -> None:
        self.client.close()


def _drop_eos(
    token_lps: list[TokenLogprob] | None, text: str, reason: str | None
) -> list[TokenLogprob] | None:
    """vLLM's /v1/completions reports the end-of-sequence token's log-prob; the other backends do not."""
    if token_lps and reason == "stop" and token_lps[-1].token and not text.endswith(token_lps[-1].token):
        return token_lps[:-1]
    return token_lps


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"
