"""The four judge protocols behind one interface: build a prompt, parse the output, render a judgement.

build_prompt("shieldlm", query, response, lang="zh", rules=["..."])  # -> chat messages for the engine
parse_judgement("llamaguard", "unsafe\\nS1,S10")                      # -> Judgement(label="unsafe", ...)
render_judgement("safetyj", Judgement("unsafe", critique="..."))      # -> "[Answer] unsafe\\n[Analysis] ..."
"""

from __future__ import annotations

from collections.abc import Sequence

from rayflow.eval.safety.judgement import Judgement
from rayflow.eval.safety.protocols import llamaguard, safetyj, shieldlm, wildguard
from rayflow.eval.safety.protocols.protocol import Protocol
from rayflow.llm import Prompt

PROTOCOLS: dict[str, Protocol] = {
    p.PROTOCOL.name: p.PROTOCOL for p in (safetyj, shieldlm, llamaguard, wildguard)
}
SCHEMES = tuple(PROTOCOLS)
LANGS = ("en", "zh")


def get_protocol(scheme: str) -> Protocol:
    try:
        return PROTOCOLS[scheme]
    except KeyError:
        raise ValueError(f"unknown judge scheme {scheme!r}; choose from {', '.join(SCHEMES)}") from None


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"unknown lang {lang!r}; choose from {', '.join(LANGS)}")


def build_prompt(
    scheme: str, query: str, response: str, lang: str = "en", rules: Sequence[str] = (), native: bool = False
) -> Prompt:
    """The judge prompt for one (query, response) pair under `scheme`, version `get_protocol(scheme).version`.

    `rules` (custom policy rules) are accepted by `shieldlm` only. `native` selects the released model's own
    input format where it differs from a plain instruction (`llamaguard`, `wildguard`).
    """
    protocol = get_protocol(scheme)
    _check_lang(lang)
    if rules and not protocol.takes_rules:
        raise ValueError(f"scheme {scheme!r} takes no custom rules; only shieldlm does")
    return protocol.build(query, response, lang, list(rules), native)


def parse_judgement(scheme: str, text: str, lang: str = "en") -> Judgement:
    """Read a judge's raw output under `scheme` (safetyj, shieldlm, llamaguard, wildguard).

    Returns a `Judgement` with `.label` in safe/unsafe/controversial/unknown (English whatever `lang`),
    `.categories`, `.critique` and `.parse_ok` (False when the verdict cannot be read; a missing critique
    alone leaves it True). Never raises on model output; raises ValueError for an unknown scheme or lang.
    """
    protocol = get_protocol(scheme)
    _check_lang(lang)
    return protocol.parse(text, lang)


def render_judgement(scheme: str, judgement: Judgement, lang: str = "en") -> str:
    """Write `judgement` as a judge under `scheme` writes it (the text a judge is trained to emit).

    The inverse of `parse_judgement`: reading the text back gives the same judgement. Protocols without a
    critique (llamaguard, wildguard) drop it. Raises ValueError for an unknown scheme or lang, or a judgement
    the protocol cannot express (an unreadable one, a label it lacks; wildguard needs its two extra lines).
    """
    protocol = get_protocol(scheme)
    _check_lang(lang)
    return protocol.render(judgement, lang)
