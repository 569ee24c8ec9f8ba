"""The shape every judge protocol module fills in: how to ask (prompt) and how to read the answer (parser)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rayflow.eval.safety.judgement import Judgement
from rayflow.llm import Prompt

BuildPrompt = Callable[[str, str, str, Sequence[str], bool], Prompt]
"""(query, response, lang, rules, native) -> prompt for the engine."""


@dataclass(frozen=True)
class Protocol:
    """One safety-judge protocol.

    `version` names the exact prompt text (`<scheme>/v<N>`); a test pins each template's fingerprint so
    an edit without a version bump fails. `label_stop` and `label_max_tokens` make `mode=label` stop right
    after the verdict instead of generating a critique.
    """

    name: str
    version: str
    labels: tuple[str, ...]
    build: BuildPrompt
    parse: Callable[[str, str], Judgement]
    takes_rules: bool = False
    has_critique: bool = False
    label_stop: tuple[str, ...] = ()
    label_max_tokens: int = 24
