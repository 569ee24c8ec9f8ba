"""The shape every judge protocol module fills in: how to ask (prompt) and how to read the answer (parser)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rayflow.eval.safety.judgement import Judgement
from rayflow.llm import Prompt

BuildPrompt = Callable[[str, str, str, Sequence[str], bool], Prompt]
"""(query, response, lang, rules, native) -> prompt for the engine."""

Render = Callable[[Judgement, str], str]
"""(judgement, lang) -> the judge's output text, the inverse of `parse`."""


@dataclass(frozen=True)
class Protocol:
    """One safety-judge protocol.

    `version` names the exact prompt text (`<scheme>/v<N>`); a test pins each template's fingerprint so
    an edit without a version bump fails. `render` writes a judgement as the text this judge emits (what a
    judge is trained to write); `parse(render(j, lang), lang) == j` for every judgement the protocol can
    express, and `render` raises ValueError for one it cannot (an unreadable one, a label it lacks). `label_stop` and `label_max_tokens` make `mode=label` stop right
    after the verdict instead of generating a critique.
    """

    name: str
    version: str
    labels: tuple[str, ...]
    build: BuildPrompt
    parse: Callable[[str, str], Judgement]
    render: Render
    takes_rules: bool = False
    has_critique: bool = False
    label_stop: tuple[str, ...] = ()
    label_max_tokens: int = 24
