"""Judge (query, response) pairs under any protocol: request and result schemas, and the judging itself.

`judge(requests, generate, config)` builds each request's prompt, generates greedily (requests sharing
sampling settings go to the model as one batch), parses the output and reads p(unsafe) from the log-probs
of the token where the verdict is written (every scheme; see each protocol's `p_unsafe`). The same function
backs the Serve endpoint (`POST /v1/judge/safety`), the label-level evaluation job and critique sampling for
judge training. `SafetyJudge` is the synchronous form over a local engine.

`JudgeConfig.preset` picks defaults for the settings left unset: `rayflow` (rayflow's prompts and parsers,
label mode stops right after the verdict, 256 tokens for a critique) or `reference` (each released model's
native prompt, its authors' parser, and their budgets: Safety-J generates 1,024 tokens in its label-level
evaluation and 4,096 in its critique-level one, and label mode does not stop at the verdict).
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
from rayflow.eval.safety.protocols import SCHEMES, get_protocol, prompt_format, prompt_version
from rayflow.llm import Engine, Generation, PromptRejected, SamplingParams

Scheme = Literal["safetyj", "shieldlm", "llamaguard", "wildguard"]
assert set(SCHEMES) == set(Scheme.__args__)  # the request schema lists every protocol


PRESETS = {
    "rayflow": {"native_format": False, "parsing": "rayflow", "max_tokens": 256, "label_max_tokens": None},
    "reference": {
        "native_format": True,
        "parsing": "reference",
        "max_tokens": 4096,
        "label_max_tokens": 1024,
    },
}


class JudgeConfig(Config):
    """How the judge prompts, decodes and reads. Settings left None take the `preset`'s value (`setting`)."""

    preset: Literal["rayflow", "reference"] = Field(
        "rayflow", description="rayflow: its prompts/parsers; reference: each released model's own (see docs)"
    )
    max_tokens: int | None = Field(
        None, ge=1, description="new tokens for mode=critique; None = preset's (256 rayflow, 4096 reference)"
    )
    label_max_tokens: int | None = Field(
        None, ge=1,
        description="mode=label: None = stop right after the verdict; a number = generate that many, no stop",
    )  # fmt: skip
    native_format: bool | None = Field(
        None, description="send each released model's own input, byte for byte; None = preset's"
    )
    parsing: Literal["rayflow", "reference"] | None = Field(
        None, description="reference = read output as the model's authors' code does, quirks included"
    )
    shieldlm_base: Literal["qwen", "internlm", "baichuan", "chatglm"] = Field(
        "qwen", description="shieldlm native prompts: the checkpoint's base model (its chat wrapping)"
    )
    logprobs: int = Field(
        20, ge=0, le=20, description="top-k log-probs read at the verdict token for p_unsafe; 0 = no p_unsafe"
    )
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy, as judges are run")

    def setting(self, name: str):
        """A setting's effective value: its own, or the preset's when it is None."""
        value = getattr(self, name)
        return PRESETS[self.preset][name] if value is None else value


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
    """The judge's answer. `p_unsafe` is p(unsafe) at the verdict token when the engine returns log-probs and
    a verdict word is among them; `truncated` is True when the token budget ran out before a readable verdict
    (a cut-off answer, not a judgement); `error` is set (and `label` is unknown) when the engine refused the
    prompt, e.g. longer than its context."""

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
    truncated: bool = False
    error: str | None = None


def sampling_for(request: JudgeRequest, config: JudgeConfig) -> SamplingParams:
    protocol = get_protocol(request.scheme)
    budget = config.setting("label_max_tokens")
    if request.mode == "label" and budget is None:  # stop right after the verdict
        max_tokens, stop = protocol.label_max_tokens, protocol.label_stop
    elif request.mode == "label" or not protocol.has_critique:
        max_tokens, stop = budget or protocol.label_max_tokens, ()
    else:
        max_tokens, stop = config.setting("max_tokens"), ()
    return SamplingParams(
        temperature=config.temperature, max_tokens=max_tokens, stop=stop, logprobs=config.logprobs or None
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
    return [_result(r, out, config, judge_model, latency_ms) for r, out in zip(requests, outputs)]


def _format(request: JudgeRequest, config: JudgeConfig):
    return prompt_format(config.setting("native_format"), request.mode, config.shieldlm_base)


def _prompt(request: JudgeRequest, config: JudgeConfig):
    protocol = get_protocol(request.scheme)
    return protocol.build(request.query, request.response, request.lang, request.rules or [],
                          _format(request, config))  # fmt: skip


def _result(
    request: JudgeRequest,
    out: Generation | PromptRejected,
    config: JudgeConfig,
    judge_model: str,
    latency_ms: float,
) -> JudgeResult:
    protocol = get_protocol(request.scheme)
    common = {
        "id": request.id,
        "judge_model": judge_model,
        "prompt_version": prompt_version(request.scheme, _format(request, config)),
        "latency_ms": latency_ms,
    }
    if isinstance(out, PromptRejected):
        return JudgeResult(label="unknown", categories=[], critique="", raw_output="", parse_ok=False,
                           error=out.reason, **common)  # fmt: skip
    reference = config.setting("parsing") == "reference"
    parsed: Judgement = (protocol.parse_reference if reference else protocol.parse)(out.text, request.lang)
    return JudgeResult(
        label=parsed.label,
        categories=parsed.categories,
        critique=parsed.critique,
        raw_output=out.text,
        parse_ok=parsed.parse_ok,
        p_unsafe=protocol.p_unsafe(out),
        harmful_request=parsed.harmful_request,
        response_refusal=parsed.response_refusal,
        truncated=out.finish_reason == "length" and not parsed.parse_ok,
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
