"""The four judge protocols behind one interface: build a prompt, parse the output, render a judgement.

build_prompt("shieldlm", query, response, lang="zh", rules=["..."])  # -> chat messages for the engine
parse_judgement("llamaguard", "unsafe\\nS1,S10")                      # -> Judgement(label="unsafe", ...)
render_judgement("safetyj", Judgement("unsafe", critique="..."))      # -> "[Answer] unsafe\\n[Analysis] ..."
"""

from __future__ import annotations

from collections.abc import Sequence

from rayflow.eval.safety.judgement import Judgement
from rayflow.eval.safety.protocols import llamaguard, safetyj, shieldlm, wildguard
from rayflow.eval.safety.protocols.protocol import SHIELDLM_BASES, PromptFormat, Protocol
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
    scheme: str,
    query: str,
    response: str,
    lang: str = "en",
    rules: Sequence[str] = (),
    native: bool = False,
    mode: str = "critique",
    shieldlm_base: str = "qwen",
) -> Prompt:
    """The judge prompt for one (query, response) pair under `scheme`, named by `prompt_version`.

    `rules` (custom policy rules) are accepted by `shieldlm` only. `native=True` gives the released model's
    own input as one raw string, byte for byte as its authors' code builds it (chat wrapping and special
    tokens included); `mode` (label or critique) picks Safety-J's label-level or critique-level prompt and
    `shieldlm_base` (qwen, internlm, baichuan, chatglm) ShieldLM's chat wrapping. Otherwise rayflow's own
    instruction, as chat messages for any chat model.
    """
    protocol = get_protocol(scheme)
    _check_lang(lang)
    if rules and not protocol.takes_rules:
        raise ValueError(f"scheme {scheme!r} takes no custom rules; only shieldlm does")
    return protocol.build(query, response, lang, list(rules), prompt_format(native, mode, shieldlm_base))


def prompt_format(native: bool = False, mode: str = "critique", shieldlm_base: str = "qwen") -> PromptFormat:
    if mode not in ("label", "critique"):
        raise ValueError(f"unknown mode {mode!r}; choose label or critique")
    if shieldlm_base not in SHIELDLM_BASES:
        raise ValueError(f"unknown shieldlm_base {shieldlm_base!r}; choose from {', '.join(SHIELDLM_BASES)}")
    return PromptFormat(native=native, mode=mode, shieldlm_base=shieldlm_base)


def prompt_version(scheme: str, fmt: PromptFormat | None = None) -> str:
    """The name of the prompt `build_prompt` gives for `fmt`: `<scheme>/v<N>` for rayflow's own text,
    `<scheme>/native-...` for a released model's."""
    protocol = get_protocol(scheme)
    return protocol.native_version(fmt) if fmt is not None and fmt.native else protocol.version


def parse_judgement(scheme: str, text: str, lang: str = "en", parsing: str = "rayflow") -> Judgement:
    """Read a judge's raw output under `scheme` (safetyj, shieldlm, llamaguard, wildguard).

    Returns a `Judgement` with `.label` in safe/unsafe/controversial/unknown (English whatever `lang`),
    `.categories`, `.critique` and `.parse_ok` (False when the verdict cannot be read; a missing critique
    alone leaves it True). `parsing="reference"` reads the output exactly as the released model's own
    evaluation code does, quirks included (docs/safety.md lists them). Never raises on model output; raises
    ValueError for an unknown scheme, lang or parsing.
    """
    protocol = get_protocol(scheme)
    _check_lang(lang)
    if parsing not in ("rayflow", "reference"):
        raise ValueError(f"unknown parsing {parsing!r}; choose rayflow or reference")
    return (protocol.parse_reference if parsing == "reference" else protocol.parse)(text, lang)


def render_judgement(scheme: str, judgement: Judgement, lang: str = "en") -> str:
    """Write `judgement` as a judge under `scheme` writes it (the text a judge is trained to emit).

    The inverse of `parse_judgement`: reading the text back gives the same judgement. Protocols without a
    critique (llamaguard, wildguard) drop it. Raises ValueError for an unknown scheme or lang, or a judgement
    the protocol cannot express (an unreadable one, a label it lacks; wildguard needs its two extra lines).
    """
    protocol = get_protocol(scheme)
    _check_lang(lang)
    return protocol.render(judgement, lang)
