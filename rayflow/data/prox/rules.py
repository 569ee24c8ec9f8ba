"""The `rules` program generator: classic heuristics written as ProX programs.

It is the offline default and the rule-based baseline ProX is compared against, and it writes programs the
executor runs like any model's, so the rest of the pipeline cannot tell the two apart.

* Chunk level: lines matching boilerplate patterns (navigation bars and breadcrumbs, cookie and JavaScript
  notices, copyright and footer lines, share/login/newsletter prompts, "related posts" and comment prompts) and
  runs of short link-like lines at the start or end of a document become `remove_lines` calls; inline page
  furniture (`[edit]`, `(opens in a new window)`) becomes `normalize` calls; otherwise `keep_chunk()`.
  Each call carries a comment naming its rule.
* Doc level: quality rules in the style of Gopher (word count, mean word length, symbol ratio, bullet and
  ellipsis lines, alphabetic words, stop words, duplicate lines), C4 (lorem ipsum) and FineWeb (lines ending
  in punctuation, short lines), read on the lines the chunk rules would keep, so boilerplate does not get a
  good page dropped. The first failing rule writes `drop_doc()` after a comment saying why; else `keep_doc()`.
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import Field

from rayflow.config import Config
from rayflow.data.prox.generator import Generated
from rayflow.llm import Engine, EngineConfig, load_tokenizer


class RulesConfig(Config):
    """Thresholds of the doc-level quality rules (Gopher / C4 / FineWeb defaults) and the chunk-level rules."""

    min_words: int = Field(50, ge=0, description="gopher: fewer content words -> drop")
    max_words: int = Field(100_000, ge=1, description="gopher: more content words -> drop")
    min_mean_word_length: float = Field(3.0, description="gopher: shorter mean word length -> drop")
    max_mean_word_length: float = Field(10.0, description="gopher: longer mean word length -> drop")
    max_symbol_word_ratio: float = Field(0.1, description="gopher: '#' and ellipses per word")
    max_bullet_lines: float = Field(0.9, description="gopher: fraction of lines starting with a bullet")
    max_ellipsis_lines: float = Field(0.3, description="gopher: fraction of lines ending with an ellipsis")
    min_alpha_words: float = Field(0.8, description="gopher: fraction of words with a letter")
    min_stop_words: int = Field(2, description="gopher: 'the', 'and', 'of', ... at least this many")
    max_duplicate_lines: float = Field(0.3, description="gopher: fraction of lines that repeat another")
    min_punctuated_lines: float = Field(0.12, description='fineweb: fraction of lines ending in . ! ? " etc.')
    max_short_lines: float = Field(0.67, description="fineweb: fraction of lines of <= 30 characters")
    edge_run_lines: int = Field(
        3, ge=2, description="a block of this many short link-like lines at an edge: a menu"
    )


_BOILERPLATE = [
    (
        "navigation",
        r"^(skip to (main )?content|toggle navigation|main menu|menu|home|back to top|jump to navigation)$",
    ),
    ("navigation", r"^([^|»›>•·/]{1,30}\s[|»›>•·/]\s){2,}[^|»›>•·/]{1,30}$"),
    (
        "cookies",
        r"\b(we use cookies|this (web)?site uses cookies|accept (all )?cookies|cookie (policy|settings|consent))\b",
    ),
    ("javascript", r"\b(enable javascript|javascript (is )?(disabled|required))\b"),
    ("copyright", r"^(©|\(c\)\s*\d{4}|copyright\b)|all rights reserved"),
    (
        "share",
        r"^(share (this|on)\b|share:|tweet|pin it|email this|print this)|\bshare on (facebook|twitter|x|linkedin)\b",
    ),
    (
        "login",
        r"^(log ?in|sign ?in|sign ?up|register|create an account|forgot (your )?password|my account)\b",
    ),
    ("newsletter", r"\b(subscribe to (our|the) newsletter|sign up for our newsletter|enter your email)\b"),
    (
        "related",
        r"^(related (posts|articles|stories)|you (may|might) also like|recommended for you|more from)\b",
    ),
    ("comments", r"^(leave a (comment|reply)|\d+ comments?|post a comment|comments are closed)\b"),
    ("byline", r"^(posted (by|in|on)\b|tags?:|categor(y|ies):|filed under\b)"),
    ("pager", r"^(« ?)?(previous|next|older|newer) (post|article|entry|posts)\b"),
    (
        "footer",
        r"^(powered by|privacy policy|terms (of (use|service)|and conditions)|contact us|about us|sitemap)\b",
    ),
    ("ads", r"^(advertisement|sponsored( content)?|ad)$"),
    ("lorem", r"\blorem ipsum\b"),
]
_BOILERPLATE_RE = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in _BOILERPLATE]
_INLINE = ["[edit]", "(opens in a new window)", "(opens in a new tab)", "[citation needed]"]
_MAX_BOILERPLATE_WORDS = 40
_TERMINAL = (".", "!", "?", '"', "'", "”", "’", ":", ";", ")")
_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with", "is", "in", "a", "for"})
_BULLETS = ("•", "-", "*", "·", "‣", "–")


def boilerplate_rule(line: str) -> str | None:
    """The name of the boilerplate rule `line` matches, or None."""
    stripped = line.strip()
    if not stripped or len(stripped.split()) > _MAX_BOILERPLATE_WORDS:
        return None
    for name, pattern in _BOILERPLATE_RE:
        if pattern.search(stripped):
            return name
    return None


def _link_like(line: str) -> bool:
    stripped = line.strip()
    return 0 < len(stripped.split()) <= 6 and not stripped.endswith(_TERMINAL)


def line_verdicts(text: str, edge_run_lines: int = 3) -> list[str | None]:
    """Per line of `text`: the rule that removes it, or None. Blank lines are never removed."""
    lines = text.split("\n")
    verdicts = [boilerplate_rule(line) for line in lines]
    # Menus and footers: a block of short link-like or boilerplate lines at the start or end of the page.
    for order in (range(len(lines)), range(len(lines) - 1, -1, -1)):
        block = []
        for i in order:
            if not lines[i].strip():
                if block:
                    break
                continue
            if not (verdicts[i] or _link_like(lines[i])):
                break
            block.append(i)
        if len(block) >= edge_run_lines:
            for i in block:
                verdicts[i] = verdicts[i] or "link_list"
    return verdicts


class RulesGenerator:
    """Writes doc and chunk programs from heuristics; `tokenizer` (a model name) only serves token statistics."""

    def __init__(self, config: RulesConfig, tokenizer: str | None = None):
        self.config = config
        self._tokenizer_name = tokenizer
        self._tokenizer = None

    def chunk_programs(self, texts: list[str], engine: Engine | None = None) -> list[Generated]:
        return [Generated(self._chunk_program(text)) for text in texts]

    def _chunk_program(self, text: str) -> str:
        verdicts = line_verdicts(text, self.config.edge_run_lines)
        calls = []
        start = None
        for i, verdict in enumerate(verdicts + [None]):
            if start is not None and (verdict != verdicts[start]):
                calls.append(f"remove_lines(line_start={start}, line_end={i - 1})  # {verdicts[start]}")
                start = None
            if verdict and start is None:
                start = i
        for fragment in _INLINE:
            if fragment in text:
                calls.append(f'normalize(source_str="{fragment}", target_str="")  # page furniture')
        return "\n".join(calls) if calls else "keep_chunk()"

    def doc_programs(self, texts: list[str], engine: Engine | None = None) -> list[Generated]:
        return [Generated(self._doc_program(text)) for text in texts]

    def _doc_program(self, text: str) -> str:
        reason = self.quality_failure(text)
        return f"# {reason}\ndrop_doc()" if reason else "keep_doc()"

    def quality_failure(self, text: str) -> str | None:
        """Why the document fails a quality rule (the first that fails), or None when it passes them all."""
        c = self.config
        verdicts = line_verdicts(text, c.edge_run_lines)
        lines = [line.strip() for line, v in zip(text.split("\n"), verdicts) if not v and line.strip()]
        words = [w for line in lines for w in line.split()]
        n_words = len(words)
        if re.search(r"\blorem ipsum\b", text, re.IGNORECASE):
            return "c4_lorem_ipsum: placeholder text"
        if n_words < c.min_words:
            return f"gopher_min_words: {n_words} content words < {c.min_words}"
        if n_words > c.max_words:
            return f"gopher_max_words: {n_words} content words > {c.max_words}"
        mean_length = sum(len(w) for w in words) / n_words
        if not c.min_mean_word_length <= mean_length <= c.max_mean_word_length:
            return f"gopher_mean_word_length: {mean_length:.2f} outside [{c.min_mean_word_length}, {c.max_mean_word_length}]"
        symbols = sum(w.count("#") for w in words) + sum(
            line.count("...") + line.count("…") for line in lines
        )
        if symbols / n_words > c.max_symbol_word_ratio:
            return f"gopher_symbol_ratio: {symbols / n_words:.2f} > {c.max_symbol_word_ratio}"
        ratios = {
            "bullet": sum(line.startswith(_BULLETS) for line in lines) / len(lines),
            "ellipsis": sum(line.endswith(("...", "…")) for line in lines) / len(lines),
            "alpha": sum(any(ch.isalpha() for ch in w) for w in words) / n_words,
            "punctuated": sum(line.endswith(_TERMINAL) for line in lines) / len(lines),
            "short": sum(len(line) <= 30 for line in lines) / len(lines),
            "duplicate": sum(n - 1 for n in Counter(lines).values()) / len(lines),
        }
        if ratios["bullet"] > c.max_bullet_lines:
            return f"gopher_bullet_lines: {ratios['bullet']:.2f} > {c.max_bullet_lines}"
        if ratios["ellipsis"] > c.max_ellipsis_lines:
            return f"gopher_ellipsis_lines: {ratios['ellipsis']:.2f} > {c.max_ellipsis_lines}"
        if ratios["alpha"] < c.min_alpha_words:
            return f"gopher_alpha_words: {ratios['alpha']:.2f} < {c.min_alpha_words}"
        stop_words = sum(w.lower() in _STOP_WORDS for w in words)
        if stop_words < c.min_stop_words:
            return f"gopher_stop_words: {stop_words} < {c.min_stop_words}"
        if ratios["duplicate"] > c.max_duplicate_lines:
            return f"gopher_duplicate_lines: {ratios['duplicate']:.2f} > {c.max_duplicate_lines}"
        if ratios["punctuated"] < c.min_punctuated_lines:
            return f"fineweb_punctuated_lines: {ratios['punctuated']:.2f} < {c.min_punctuated_lines}"
        if ratios["short"] > c.max_short_lines:
            return f"fineweb_short_lines: {ratios['short']:.2f} > {c.max_short_lines}"
        return None

    def count_tokens(self, texts: list[str], engine: Engine | None = None) -> list[int] | None:
        if self._tokenizer_name is None:
            return None
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(EngineConfig(model=self._tokenizer_name))
        return [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]
