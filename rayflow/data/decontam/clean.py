"""GPT-3's corpus-side filter: cut the text around each contaminating n-gram, drop heavily hit documents.

For a document with hits (matched n-grams of the `gpt3` rule's length): more than `max_hits` of them drops the
whole document; otherwise `window_chars` characters are cut on each side of every hit, and the remaining fragments
shorter than `min_fragment_chars` are dropped. A document without hits is kept whole. Hits are token positions;
`token_spans` maps tokens back to character offsets in the original text.

Plain Python; no Ray.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from pydantic import Field

from rayflow.config import Config
from rayflow.data.decontam.rules import CJK_RANGES, NormalizeConfig, tokenize


class FilterConfig(Config):
    """The cleaned corpus (GPT-3's filter); off by default: the job then only reports."""

    enabled: bool = Field(False, description="write the cleaned corpus (cleaned/ parts)")
    window_chars: int = Field(200, ge=0, description="characters cut on each side of a hit")
    max_hits: int = Field(10, ge=0, description="a document with more hits than this is dropped whole")
    min_fragment_chars: int = Field(200, ge=0, description="shorter remaining fragments are dropped")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def token_spans(text: str, cfg: NormalizeConfig) -> list[tuple[int, int]] | None:
    """`(start, end)` character offsets in `text` of each of `tokenize(text, cfg)`'s tokens, or None when the
    character-by-character reading does not give the same number of tokens (rare normalisation cases)."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, ch in enumerate(text):
        piece = unicodedata.normalize("NFKC", ch) if cfg.nfkc else ch
        piece = piece.lower() if cfg.lowercase else piece
        for c in piece:
            punct = cfg.strip_punctuation and unicodedata.category(c).startswith("P")
            if punct or c.isspace() or (cfg.cjk_chars and _is_cjk(c)):
                if start is not None:
                    spans.append((start, i))
                    start = None
                if not punct and not c.isspace():
                    spans.append((i, i + 1))
            elif start is None:
                start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans if len(spans) == len(tokenize(text, cfg)) else None


def clean_document(
    text: str, hit_positions: Sequence[int], n: int, cfg: FilterConfig, normalize: NormalizeConfig
) -> list[str]:
    """The fragments of `text` kept after removing the hits (token start positions of matched `n`-grams); an
    empty list when the document is dropped."""
    positions = sorted(set(hit_positions))
    if not positions:
        return [text]
    if len(positions) > cfg.max_hits:
        return []
    spans = token_spans(text, normalize)
    if spans is None:  # cannot place the hits in the text: drop it rather than keep contaminated text
        return []
    cuts: list[list[int]] = []
    for p in positions:
        lo = max(0, spans[p][0] - cfg.window_chars)
        hi = min(len(text), spans[p + n - 1][1] + cfg.window_chars)
        if cuts and lo <= cuts[-1][1]:
            cuts[-1][1] = max(cuts[-1][1], hi)
        else:
            cuts.append([lo, hi])
    fragments, at = [], 0
    for lo, hi in cuts:
        fragments.append(text[at:lo])
        at = hi
    fragments.append(text[at:])
    return [f for f in fragments if f and len(f) >= cfg.min_fragment_chars]
