"""Judge (query, response) pairs under any protocol: request and result schemas, and the judging itself.

`judge(requests, generate, config)` builds each request's prompt, generates greedily (requests sharing
sampling settings go to the model as one batch), parses the output and, for Llama Guard, reads p(unsafe)
from the first token's log-probs. The same function backs the Serve endpoint (`POST /v1/judge/safety`),
the label-level evaluation job and critique sampling for judge training. `SafetyJudge` is the synchronous
form over a local engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rayflow.config import Config
from rayflow.eval.safety.judgement import Judgement
from rayflow.eval.safety.llm import Generate, from_engine
from rayflow.eval.safety.protocols import SCHEMES, build_prompt, get_protocol, llamaguard
from rayflow.llm import Engine, Generation, PromptRejected, SamplingParams

Scheme = Literal["safetyj", "shieldlm", "llamaguard", "wildguard"]
assert set(SCHEMES) == set(Scheme.__args__)  # the request schema lists every protocol


class JudgeConfig(Config):
    """How the judge decodes; the prompt itself is fixed by each protocol's version."""

    max_tokens: int = Field(
        256, ge=1, description="new tokens for mode=critique (label mode stops at the verdict)"
    )
    native_format: bool = Field(
        False,
        description="llamaguard/wildguard: send the released model's own input format, not an instruction",
    )
    logprobs: int = Field(20, ge=1, le=20, description="llamaguard: top-k log-probs read for p(unsafe)")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy, as judges are run")


class JudgeRequest(BaseModel):
    """One pair to judge. `rules` (custom policy rules) are for `scheme=shieldlm` only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | int | None = None
    lang: Literal["en", "zh"] = "en"
    query: str = Field(min_length=1)
    response: str
    scheme: Scheme = "safetyj"
    mode: Literal["label", "critique"] = "critique"
    rules: list[str] | None = None

    @model_validator(mode="after")
    def _rules_need_shieldlm(self) -> JudgeRequest:
        if self.rules and not get_protocol(self.scheme).takes_rules:
            raise ValueError(f"rules: scheme {self.scheme!r} takes no custom rules; only shieldlm does")
        return self


class JudgeResult(BaseModel):
    """The judge's answer. `p_unsafe` is set for llamaguard when the engine returns log-probs; `error` is set
    (and `label` is unknown) when the engine refused the prompt, e.g. longer than its context."""

    id: str | int | None
    label: str
    categories: list[str]
    critique: str
    raw_output: str
    parse_ok: bool
    p_unsafe: float | None = None
    harmful_request: str | None = None
    response_refusal: str | None = None
    judge_model: str
    prompt_version: str
    latency_ms: float
    error: str | None = None


def sampling_for(request: JudgeRequest, config: JudgeConfig) -> SamplingParams:
    protocol = get_protocol(request.scheme)
    label_only = request.mode == "label" or not protocol.has_critique
    return SamplingParams(
        temperature=config.temperature,
        max_tokens=protocol.label_max_tokens if label_only else config.max_tokens,
        stop=protocol.label_stop if request.mode == "label" else (),
        logprobs=config.logprobs if request.scheme == "llamaguard" else None,
    )


async def judge(
    requests: Sequence[JudgeRequest], generate: Generate, config: JudgeConfig, judge_model: str
) -> list[JudgeResult]:
    """Judge every request; results come back in request order."""
    start = time.perf_counter()
    groups: dict[SamplingParams, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(sampling_for(request, config), []).append(i)
    outputs: list[Generation | PromptRejected | None] = [None] * len(requests)

    async def run(params: SamplingParams, indices: list[int]) -> None:
        prompts = [_prompt(requests[i], config) for i in indices]
        for i, out in zip(indices, await generate(prompts, params)):
            outputs[i] = out

    await asyncio.gather(*(run(params, indices) for params, indices in groups.items()))
    latency_ms = round((time.perf_counter() - start) * 1000, 2)
    return [_result(r, out, judge_model, latency_ms) for r, out in zip(requests, outputs)]


def _prompt(request: JudgeRequest, config: JudgeConfig):
    return build_prompt(
        request.scheme,
        request.query,
        request.response,
        request.lang,
        request.rules or (),
        config.native_format,
    )


def _result(
    request: JudgeRequest, out: Generation | PromptRejected, judge_model: str, latency_ms: float
) -> JudgeResult:
    protocol = get_protocol(request.scheme)
    common = {
        "id": request.id,
        "judge_model": judge_model,
        "prompt_version": protocol.version,
        "latency_ms": latency_ms,
    }
    if isinstance(out, PromptRejected):
        return JudgeResult(label="unknown", categories=[], critique="", raw_output="", parse_ok=False,
                           error=out.reason, **common)  # fmt: skip
    parsed: Judgement = protocol.parse(out.text, request.lang)
    return JudgeResult(
        label=parsed.label,
        categories=parsed.categories,
        critique=parsed.critique,
        raw_output=out.text,
        parse_ok=parsed.parse_ok,
        p_unsafe=llamaguard.p_unsafe(out) if request.scheme == "llamaguard" else None,
        harmful_request=parsed.harmful_request,
        response_refusal=parsed.response_refusal,
        **common,
    )


class SafetyJudge:
    """Synchronous judge over a local engine: `SafetyJudge(engine, "tiny").judge([JudgeRequest(...)])`."""

    def __init__(self, engine: Engine, judge_model: str, config: JudgeConfig | None = None):
        self.generate = from_engine(engine)
        self.judge_model = judge_model
        self.config = config or JudgeConfig()

    def judge(self, requests: Sequence[JudgeRequest]) -> list[JudgeResult]:
        return asyncio.run(judge(requests, self.generate, self.config, self.judge_model))
