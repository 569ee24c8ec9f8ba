"""The published n-gram contamination rules, exactly, on plain Python: tokens, n-grams, per-example verdicts.

Tokens (`tokenize`): NFKC-normalise, `str.lower()`, then per character in order: a character whose Unicode
category starts with `P` becomes a space, else a character in a CJK block (Hiragana/Katakana, CJK extension A,
CJK unified ideographs, Hangul syllables, CJK compatibility ideographs) is a token of its own; then split on
whitespace. n-grams never cross a document boundary.

Rules (`check_example`; `n` and thresholds are `RulesConfig`):
- `gpt3` (n = 13, GPT-3 / lm-eval's Janitor): score = share of the example's 13-grams (one per position) found in
  the corpus; dirty when score > 0.
- `palm` (n = 8, PaLM): share of the example's 8-grams found; dirty when score >= 0.70.
- `coverage` (Llama 2 style, n = 10, no skip budget): a token is contaminated when it lies in some 10-gram of
  the example found in the corpus; score = contaminated tokens / tokens; bucket `clean` < 0.2, `dirty` >= 0.8,
  else `partial`; dirty when the bucket is `dirty`.
- An example shorter than n tokens scores 1.0 when its whole token sequence occurs contiguously in one corpus
  document, else 0.0, then the rule's threshold; an example with no tokens scores 0.0 and is not dirty.

`verdict` turns found n-gram positions into a `Verdict`; the Ray Data job (`pipeline`) finds the positions at
corpus scale and calls the same function, so its verdicts equal `check_example`'s.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from rayflow.config import Config

Rule = Literal["gpt3", "palm", "coverage"]
RULES: tuple[Rule, ...] = ("gpt3", "palm", "coverage")
CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF))


class NormalizeConfig(Config):
    """How text becomes tokens; the defaults are the rules' definition (`check_example` uses them)."""

    nfkc: bool = Field(True, description="NFKC-normalise first (full-width letters -> ASCII, ligatures split)")
    lowercase: bool = Field(True, description="str.lower() after normalising")
    strip_punctuation: bool = Field(True, description="characters of Unicode category P become spaces")
    cjk_chars: bool = Field(True, description="each kana, CJK ideograph or Hangul syllable is a token")


class RulesConfig(Config):
    """n and thresholds of the three rules; the defaults are the published ones."""

    gpt3_n: int = Field(13, ge=1, description="gpt3: n-gram length (dirty when any n-gram is found)")
    palm_n: int = Field(8, ge=1, description="palm: n-gram length")
    palm_threshold: float = Field(0.70, gt=0, le=1, description="palm: dirty when share found >= this")
    coverage_n: int = Field(10, ge=1, description="coverage: n-gram length marking tokens contaminated")
    coverage_clean: float = Field(0.2, gt=0, le=1, description="coverage: bucket clean below this share")
    coverage_dirty: float = Field(0.8, gt=0, le=1, description="coverage: bucket dirty at or above this share")

    def n(self, rule: Rule) -> int:
        """The n-gram length `rule` uses."""
        return {"gpt3": self.gpt3_n, "palm": self.palm_n, "coverage": self.coverage_n}[rule]


DEFAULT_NORMALIZE = NormalizeConfig()
DEFAULT_RULES = RulesConfig()


@dataclass(frozen=True)
class Verdict:
    """One example under one rule. `score` in [0, 1]; `bucket` only for `coverage` (clean/partial/dirty).

    `n_tokens`: the example's tokens; `n_ngrams` / `n_found`: its n-grams (one per position) and how many were
    found (both 0 for an example shorter than n, whose score says whether it occurs whole).
    """

    rule: str
    dirty: bool
    score: float
    bucket: str | None
    n_tokens: int
    n_ngrams: int
    n_found: int


@functools.cache
def _table(strip_punctuation: bool, cjk_chars: bool) -> dict[int, str]:
    """`str.translate` table applying the per-character rule: punctuation -> space, CJK -> ' c '."""
    table: dict[int, str] = {}
    if cjk_chars:
        for lo, hi in CJK_RANGES:
            for cp in range(lo, hi + 1):
                table[cp] = f" {chr(cp)} "
    if strip_punctuation:  # after CJK: a punctuation mark inside a CJK block is still a space
        for cp in range(sys.maxunicode + 1):
            if unicodedata.category(chr(cp)).startswith("P"):
                table[cp] = " "
    return table


def tokenize(text: str, cfg: NormalizeConfig = DEFAULT_NORMALIZE) -> list[str]:
    """The rules' tokens of `text` (see the module docstring)."""
    if cfg.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if cfg.lowercase:
        text = text.lower()
    return text.translate(_table(cfg.strip_punctuation, cfg.cjk_chars)).split()


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Every n-gram of `tokens`, one per start position (none when fewer than n tokens)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def verdict(
    rule: Rule, n_tokens: int, found: Iterable[int], whole_found: bool, cfg: RulesConfig = DEFAULT_RULES
) -> Verdict:
    """The verdict of an example of `n_tokens` tokens under `rule`, from where its n-grams were found.

    `found`: start positions (0-based) of the example's n-grams (n = the rule's) found in the corpus;
    `whole_found`: whether the whole token sequence occurs in one document (used when n_tokens < n).
    """
    n = cfg.n(rule)
    if n_tokens == 0:
        score, n_ngrams, n_found = 0.0, 0, 0
    elif n_tokens < n:
        score, n_ngrams, n_found = (1.0 if whole_found else 0.0), 0, 0
    else:
        positions = set(found)
        n_ngrams, n_found = n_tokens - n + 1, len(positions)
        if rule == "coverage":
            covered = set()
            for p in positions:
                covered.update(range(p, p + n))
            score = len(covered) / n_tokens
        else:
            score = n_found / n_ngrams
    bucket = None
    if rule == "gpt3":
        dirty = score > 0
    elif rule == "palm":
        dirty = score >= cfg.palm_threshold
    else:
        bucket = "clean" if score < cfg.coverage_clean else "dirty" if score >= cfg.coverage_dirty else "partial"
        dirty = bucket == "dirty"
    return Verdict(rule, dirty, score, bucket, n_tokens, n_ngrams, n_found)


def check_example(
    example: str,
    corpus: list[str],
    rule: str = "gpt3",
    *,
    rules: RulesConfig = DEFAULT_RULES,
    normalize: NormalizeConfig = DEFAULT_NORMALIZE,
) -> Verdict:
    """Is `example` contaminated by `corpus` (a list of documents) under `rule` (gpt3, palm or coverage)?

    The reference implementation: builds every n-gram of every document. Returns a `Verdict` with `.dirty`,
    `.score` and `.bucket` (coverage only). Raises `ValueError` for an unknown rule.
    """
    if rule not in RULES:
        raise ValueError(f"rule: unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    tokens = tokenize(example, normalize)
    n = rules.n(rule)  # type: ignore[arg-type]
    if 0 < len(tokens) < n:
        whole = tuple(tokens)
        found = any(whole in set(ngrams(tokenize(doc, normalize), len(whole))) for doc in corpus)
        return verdict(rule, len(tokens), (), found, rules)  # type: ignore[arg-type]
    seen: set[tuple[str, ...]] = set()
    for doc in corpus:
        seen.update(ngrams(tokenize(doc, normalize), n))
    hits = [i for i, gram in enumerate(ngrams(tokens, n)) if gram in seen]
    return verdict(rule, len(tokens), hits, False, rules)  # type: ignore[arg-type]
