"""The shape every judge protocol module fills in: how to ask (prompt) and how to read the answer (parser)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from rayflow.eval.safety.judgement import Judgement
from rayflow.llm import Generation, Prompt

SHIELDLM_BASES = ("qwen", "internlm", "baichuan", "chatglm")


@dataclass(frozen=True)
class PromptFormat:
    """Which prompt to build.

    `native=False`: rayflow's own instruction as chat messages, for any chat model (versioned `<scheme>/v1`).
    `native=True`: the released model's own input, byte for byte as its authors' code builds it, as one raw
    string (chat wrapping and special tokens included). `mode` picks between Safety-J's two released prompts
    (its label-level and critique-level evaluation scripts differ); `shieldlm_base` picks the chat wrapping of
    the ShieldLM checkpoint (ShieldLM-14B-qwen, -7B-internlm2, -13B-baichuan2, -6B-chatglm3).
    """

    native: bool = False
    mode: Literal["label", "critique"] = "critique"
    shieldlm_base: Literal["qwen", "internlm", "baichuan", "chatglm"] = "qwen"


BuildPrompt = Callable[[str, str, str, Sequence[str], PromptFormat], Prompt]
"""(query, response, lang, rules, format) -> prompt for the engine."""

Render = Callable[[Judgement, str], str]
"""(judgement, lang) -> the judge's output text, the inverse of `parse`."""


@dataclass(frozen=True)
class Protocol:
    """One safety-judge protocol.

    `version` names the exact text of rayflow's own prompt (`<scheme>/v<N>`); a test pins each template's
    fingerprint so an edit without a version bump fails. `native_version(format)` names a released model's
    prompt (`<scheme>/native...`); a test compares each with the official string. `render` writes a
    judgement as the text this judge emits (what a judge is trained to write); `parse(render(j, lang), lang)
    == j` for every judgement the protocol can express, and `render` raises ValueError for one it cannot (an
    unreadable one, a label it lacks). `parse_reference` reads output exactly as the reference's own
    evaluation code does, quirks included. `p_unsafe` reads p(unsafe) from the log-probs of the token where
    the verdict is written, or None. `label_stop` and `label_max_tokens` make `mode=label` stop right after
    the verdict instead of generating a critique.
    """

    name: str
    version: str
    labels: tuple[str, ...]
    build: BuildPrompt
    parse: Callable[[str, str], Judgement]
    parse_reference: Callable[[str, str], Judgement]
    render: Render
    native_version: Callable[[PromptFormat], str]
    p_unsafe: Callable[[Generation], float | None]
    takes_rules: bool = False
    has_critique: bool = False
    label_stop: tuple[str, ...] = ()
    label_max_tokens: int = 24
