"""The evaluation-set index a corpus is scanned against: exact n-gram sets behind an `rbloom` prefilter.

Built once on the driver from the examples' tokens and broadcast to the scan actors. Scanning a batch of
documents (`EvalIndex.scan`) is vectorised:

1. tokens (`rules.tokenize`; ASCII documents take an Arrow path that gives the same tokens),
2. each token's id in the examples' vocabulary; a token no example has cannot be part of a match,
3. a 64-bit polynomial hash of every window of every needed length whose tokens are all in the vocabulary and
   in one document (prefix sums, so each length costs a few array passes),
4. the window hashes through two filters with false positives only: a bitmap of hash buckets (one numpy
   lookup for the whole batch), then the length's rbloom Bloom filter for the windows that pass it,
5. exact re-verification: the window's id tuple looked up in the length's exact n-gram map. Ids map one to
   one to tokens, so a hit is a true token-for-token match and the filter never causes a missed one.

Lengths above the shortest rule n (the gate) are looked up only where a gate-length n-gram was found at the
same start: every longer n-gram of an example begins with one of that example's gate-grams.

Lengths: every rule's n, plus the length of each example shorter than some rule's n (its whole sequence is
matched as one n-gram at position 0). A hit is `(example, length, position in example, position in document)`.

Plain Python, numpy and pyarrow; no Ray.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rbloom import Bloom

from rayflow.data.decontam.rules import NormalizeConfig, tokenize

_P = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
_MASK = (1 << 64) - 1
_MIX = np.uint64(0xD6E8FEB86659FD93)  # spreads the hash over the top bits the bitmap reads
# ASCII characters the rules turn into token breaks: punctuation (category P) and Python's whitespace.
_ASCII_PUNCT = "".join(chr(c) for c in range(128) if unicodedata.category(chr(c)).startswith("P"))
_ASCII_SPACE = "".join(chr(c) for c in range(128) if chr(c).isspace())

Hit = tuple[int, int, int, int]  # example, length, position in the example, position in the document


def ngram_hash(ids: Sequence[int]) -> int:
    """The window hash of a sequence of vocabulary ids (the same value `scan` computes for a window)."""
    h, p = 0, 1
    for i in ids:
        h = (h + (i + 1) * p) & _MASK
        p = (p * _P) & _MASK
    return h


class EvalIndex:
    """Exact n-gram maps of every needed length with a Bloom prefilter each; picklable (broadcast by Ray).

    `examples`: each example's tokens. `lengths_for(n_tokens)` in the rules decides which lengths are needed;
    here `rule_ns` are the rules' n-gram lengths. `bloom_fpr` is the filters' false-positive rate: any value
    gives the same hits (exact verification), a lower one fewer re-verifications.
    """

    def __init__(
        self,
        examples: Sequence[Sequence[str]],
        rule_ns: Sequence[int],
        normalize: NormalizeConfig,
        bloom_fpr: float = 1e-3,
    ):
        self.normalize = normalize
        self.rule_ns = tuple(sorted(set(rule_ns)))
        self.bloom_fpr = bloom_fpr
        self.vocab: dict[str, int] = {}
        ids = [[self.vocab.setdefault(t, len(self.vocab)) for t in tokens] for tokens in examples]
        self.vocab_array = pa.array(list(self.vocab), pa.string())
        self.exact: dict[int, dict[tuple[int, ...], list[tuple[int, int]]]] = {}
        longest_n = max(self.rule_ns, default=0)
        for ex, seq in enumerate(ids):
            lengths = {n for n in self.rule_ns if n <= len(seq)}
            for m in lengths:
                for pos in range(len(seq) - m + 1):
                    self.exact.setdefault(m, {}).setdefault(tuple(seq[pos : pos + m]), []).append((ex, pos))
            if 0 < len(seq) < longest_n and len(seq) not in lengths:  # a short example, matched whole
                self.exact.setdefault(len(seq), {}).setdefault(tuple(seq), []).append((ex, 0))
        self.lengths = tuple(sorted(self.exact))
        self._build_filters()
        digest = hashlib.sha256(repr((self.rule_ns, normalize.model_dump(), ids)).encode())
        self.fingerprint = digest.hexdigest()[:16]
        self._powers = np.ones(1, np.uint64)
        self._inverse_powers = np.ones(1, np.uint64)
        breaks = (_ASCII_PUNCT if normalize.strip_punctuation else "") + _ASCII_SPACE
        self._ascii_table = str.maketrans(breaks, " " * len(breaks))

    def _build_filters(self) -> None:
        """Per length: a bitmap of hash buckets (one-hash filter, a vectorised numpy lookup) and the rbloom."""
        self.blooms: dict[int, Bloom] = {}
        self.bitmaps: dict[int, tuple[np.ndarray, int]] = {}
        for m, grams in self.exact.items():
            hashes = [ngram_hash(g) for g in grams]
            self.blooms[m] = Bloom(max(len(hashes), 1), self.bloom_fpr)
            self.blooms[m].update(hashes)
            bits = max(16, (16 * len(hashes)).bit_length())  # >= 16 buckets per n-gram: ~6% pass
            bitmap = np.zeros(1 << bits, bool)
            with np.errstate(over="ignore"):
                bitmap[(np.array(hashes, np.uint64) * _MIX) >> np.uint64(64 - bits)] = True
            self.bitmaps[m] = (bitmap, 64 - bits)

    # rbloom filters with Python's own (fastest) hash cannot be serialised: each scan actor rebuilds them (and
    # the bitmaps) from the exact maps it receives, once.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["blooms"], state["bitmaps"]
        state["_powers"] = state["_inverse_powers"] = np.ones(1, np.uint64)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build_filters()

    def tokens(self, texts: Sequence[str]) -> tuple[pa.Array, np.ndarray]:
        """Tokens of every text, flat and in order, and the index of the text each token belongs to."""
        lower, table = self.normalize.lowercase, self._ascii_table
        # For ASCII text NFKC is the identity, so lower-casing and turning punctuation and whitespace into spaces
        # (C-level `str.translate`) gives `tokenize`'s tokens separated by spaces; other text is tokenised in
        # Python and re-joined with spaces (tokens hold no whitespace). One Arrow split then serves both.
        spaced = [
            (t.lower() if lower else t).translate(table).strip(" ") if t.isascii()
            else " ".join(tokenize(t, self.normalize))
            for t in texts
        ]  # fmt: skip
        nonempty = [i for i, t in enumerate(spaced) if t]
        lists = pc.ascii_split_whitespace(pa.array([spaced[i] for i in nonempty], pa.string()))
        owner = np.array(nonempty, np.int64)[pc.list_parent_indices(lists).to_numpy()]
        return pc.list_flatten(lists), owner

    def _grow(self, size: int) -> None:
        if len(self._powers) >= size:
            return
        size = max(size, 2 * len(self._powers))
        with np.errstate(over="ignore"):
            self._powers = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, _P, np.uint64)], dtype=np.uint64)
            self._inverse_powers = np.cumprod(
                np.r_[np.uint64(1), np.full(size - 1, _P_INV, np.uint64)], dtype=np.uint64
            )

    def scan(self, texts: Sequence[str]) -> list[list[Hit]]:
        """Per text, its hits `(example, length, example position, document position)`, in no fixed order."""
        hits: list[list[Hit]] = [[] for _ in texts]
        if not self.lengths or not texts:
            return hits
        tokens, owner = self.tokens(texts)
        total = len(tokens)
        if total == 0:
            return hits
        ids = pc.fill_null(pc.index_in(tokens, value_set=self.vocab_array), -1).to_numpy().astype(np.int64)
        missing = np.concatenate([[0], np.cumsum(ids < 0)])
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        doc_start = np.zeros(len(texts), np.int64)
        doc_start[owner[starts]] = starts
        self._grow(total + 1)
        with np.errstate(over="ignore"):
            prefix = np.concatenate(
                [[np.uint64(0)], np.cumsum((ids + 1).astype(np.uint64) * self._powers[:total], dtype=np.uint64)]
            )
            gate = min(self.rule_ns, default=0)
            gate_found = np.zeros(0, np.int64)
            for m in self.lengths:
                if total < m:
                    continue
                valid = (missing[m:] == missing[:-m]) & (owner[: total - m + 1] == owner[m - 1 :])
                if m > gate:
                    # A longer n-gram of an example starts with one of its `gate`-grams: only windows whose
                    # gate-gram was found can match, so the rest are not even looked up.
                    at = gate_found[gate_found <= total - m]
                    at = at[valid[at]]
                else:
                    at = np.flatnonzero(valid)
                h = (prefix[at + m] - prefix[at]) * self._inverse_powers[at]
                bitmap, shift = self.bitmaps[m]
                first = bitmap[(h * _MIX) >> np.uint64(shift)]
                at, h = at[first], h[first]
                bloom = self.blooms[m]
                maybe = np.fromiter(map(bloom.__contains__, h.tolist()), bool, count=len(at))
                exact = self.exact[m]
                matched = []
                for i in at[maybe].tolist():
                    entries = exact.get(tuple(ids[i : i + m].tolist()))
                    if entries:  # None: a Bloom false positive (or a hash collision), dropped here
                        matched.append(i)
                        doc = int(owner[i])
                        hits[doc].extend((ex, m, pos, i - int(doc_start[doc])) for ex, pos in entries)
                if m == gate:
                    gate_found = np.array(matched, np.int64)
        return hits
