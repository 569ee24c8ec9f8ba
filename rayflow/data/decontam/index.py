"""The evaluation-set index a corpus is scanned against: exact n-gram sets behind an `rbloom` prefilter.

Built once on the driver from the examples' tokens and broadcast to the scan actors. Scanning a batch of
documents (`EvalIndex.scan_arrays`) is vectorised over the whole batch, an Arrow string array read in place; the
per-byte, per-token and per-window loops are compiled (`kernels`, numba):

1. tokens with `rules.tokenize`'s rules: ASCII documents as bytes (NFKC is the identity there; one C-level
   `bytes.translate` lower-cases and turns every break into a space, then one compiled pass finds the runs of
   non-space bytes inside each document and their values), the others as code points after Python's own NFKC
   and `str.lower()` (numpy tables mark breaks and CJK characters, each a token of its own), re-encoded as UTF-8,
2. a 64-bit value per token (`token_value`): a token of at most 8 UTF-8 bytes (no NUL) is its bytes, so equal
   values mean equal tokens; a longer one gets a hash, and a window holding one has its bytes re-checked,
3. a 64-bit polynomial hash of every window of the shortest needed lengths in one document, rolled in one
   compiled pass that also looks each hash up in a bitmap of hash buckets (a one-hash filter),
4. the windows that pass it through the length's rbloom Bloom filter,
5. exact re-verification: the window's token values looked up in the length's exact n-gram map (and the
   strings compared where a token is long), so a hit is a true token-for-token match and the filters never
   cause a missed one.

Longer lengths are not hashed: an n-gram longer than the shortest rule n (the gate, g) matches at a position
exactly when the gate-grams at offsets 0, g, 2g, ... and n - g of it all matched the example at the same
offsets in one document (those gate-grams cover it), so they are read off the gate's hits.

Lengths: every rule's n, plus the length of each example shorter than some rule's n (its whole sequence is
matched as one n-gram at position 0). A hit is `(example, length, position in example, position in document)`.

Plain Python, numpy, numba and pyarrow; no Ray.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rbloom import Bloom

from rayflow.data.decontam import kernels
from rayflow.data.decontam.reading import TokenChunk
from rayflow.data.decontam.rules import NormalizeConfig, _table

_P = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_P_INV = pow(_P, -1, 1 << 64)
_Q = 0xC2B2AE3D27D4EB4F  # the long-token hash's multiplier
_MASK = (1 << 64) - 1
_MIX = np.uint64(0xD6E8FEB86659FD93)  # spreads the hash over the top bits the bitmap reads
_LONG = 0xFF << 56  # top byte of a long token's value; a short token's is a UTF-8 byte or 0, never 0xFF
_P_U64, _P_INV_U64 = np.uint64(_P), np.uint64(_P_INV)

Hit = tuple[int, int, int, int]  # example, length, position in the example, position in the document


def token_value(token: str) -> int:
    """The 64-bit value of a token (the same value `scan` computes from a document's bytes): its UTF-8 bytes,
    little-endian and zero-padded, when it has at most 8 and no NUL (one to one), else a hash with top byte 0xFF
    (which no UTF-8 byte is)."""
    data = token.encode()
    if len(data) <= 8 and b"\0" not in data:
        return int.from_bytes(data, "little")
    h = 0
    for k in range(0, len(data), 8):
        h = (h * _Q + int.from_bytes(data[k : k + 8], "little")) & _MASK
    return (h ^ len(data)) & ~_LONG & _MASK | _LONG


def ngram_hash(values: Sequence[int]) -> int:
    """The window hash of a sequence of token values (the same value `scan` computes for a window)."""
    h, p = 0, 1
    for v in values:
        h = (h + v * p) & _MASK
        p = (p * _P) & _MASK
    return h


@functools.cache
def code_point_classes(strip_punctuation: bool, cjk_chars: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per code point (arrays of sys.maxunicode + 1 bools): does it break tokens (punctuation when stripped, or
    whitespace as `str.split` sees it), and is it a token of its own (a CJK character that is not a break)."""
    breaks = np.zeros(sys.maxunicode + 1, bool)
    own = np.zeros(sys.maxunicode + 1, bool)
    for cp, replacement in _table(strip_punctuation, cjk_chars).items():
        (breaks if replacement == " " else own)[cp] = True
    breaks[[cp for cp in range(sys.maxunicode + 1) if chr(cp).isspace()]] = True
    return breaks, own


def _token_spans(word: np.ndarray, bounds: np.ndarray, own: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Start and end (exclusive) unit index of every token: maximal runs of `word` units inside one document
    (documents span `bounds[k]:bounds[k + 1]`), each `own` unit a token by itself."""
    n = len(word)
    runs = np.r_[0, np.flatnonzero(word[1:] != word[:-1]) + 1, n]
    first = 0 if n and word[0] else 1
    starts, ends = runs[first:-1:2], runs[first + 1 :: 2]
    # Split points inside runs: document boundaries, and either side of a unit that is a token of its own.
    cuts = bounds[1:-1]
    if own is not None:
        at = np.flatnonzero(own)
        cuts = np.r_[cuts, at, at + 1]
    cuts = cuts[(cuts > 0) & (cuts < n)]
    cuts = np.unique(cuts[word[cuts - 1] & word[cuts]])
    if len(cuts):
        starts = np.insert(starts, np.searchsorted(starts, cuts), cuts)
        ends = np.insert(ends, np.searchsorted(ends, cuts), cuts)
    return starts.astype(np.int64, copy=False), ends.astype(np.int64, copy=False)


class EvalIndex:
    """Exact n-gram maps with a Bloom prefilter each; picklable (broadcast by Ray).

    `examples`: each example's tokens; `rule_ns`: the rules' n-gram lengths. `bloom_fpr` is the filters'
    false-positive rate: any value gives the same hits (exact verification), a lower one fewer re-verifications.
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
        self.examples = [list(tokens) for tokens in examples]
        self.example_lengths = [len(tokens) for tokens in examples]
        self.gate = min(self.rule_ns, default=0)
        longest_n = max(self.rule_ns, default=0)
        values = {t: token_value(t) for tokens in examples for t in tokens}
        # A long token's value is a hash: a window holding one is re-checked against the example token's bytes.
        self.long_tokens = {v: t.encode() for t, v in values.items() if v >> 56 == 0xFF}
        if len(self.long_tokens) < sum(v >> 56 == 0xFF for v in values.values()):
            raise ValueError("two evaluation tokens share a 64-bit value; cannot index them exactly")
        lengths: set[int] = set()
        # Exact maps (token values -> (example, position)) of the lengths that are hashed: up to the gate.
        self.exact: dict[int, dict[tuple[int, ...], list[tuple[int, int]]]] = {}
        for ex, tokens in enumerate(examples):
            seq = [values[t] for t in tokens]
            needed = {n for n in self.rule_ns if n <= len(seq)}
            if 0 < len(seq) < longest_n:  # a short example, matched whole
                needed.add(len(seq))
            lengths |= needed
            for m in needed:
                if m > self.gate:
                    continue
                starts = range(len(seq) - m + 1) if m in self.rule_ns else range(1)
                for pos in starts:
                    self.exact.setdefault(m, {}).setdefault(tuple(seq[pos : pos + m]), []).append((ex, pos))
        self.lengths = tuple(sorted(lengths))
        self._build_filters()
        digest = hashlib.sha256(repr((self.rule_ns, normalize.model_dump(), self.examples)).encode())
        self.fingerprint = digest.hexdigest()[:16]
        # ASCII bytes in one `bytes.translate`: upper case lowered (when configured); punctuation (when stripped)
        # and Python's whitespace become spaces, the only byte that then breaks tokens.
        table = bytearray(range(256))
        for c in range(128):
            if (normalize.strip_punctuation and unicodedata.category(chr(c)).startswith("P")) or chr(c).isspace():
                table[c] = ord(" ")
            elif normalize.lowercase:
                table[c] = ord(chr(c).lower())
        self.ascii_table = np.frombuffer(bytes(table), np.uint8)

    def _build_filters(self) -> None:
        """Per hashed length: a bitmap of hash buckets (one-hash filter, bits packed in uint64s), the rbloom,
        and the exact map as arrays sorted by hash (n-gram values, and each n-gram's (example, position)s)."""
        self.blooms: dict[int, Bloom] = {}
        self.bitmaps: dict[int, tuple[np.ndarray, int]] = {}
        self.tables: dict[int, tuple[np.ndarray, ...]] = {}
        for m, grams in self.exact.items():
            hashes = np.array([ngram_hash(g) for g in grams], np.uint64)
            self.blooms[m] = Bloom(max(len(hashes), 1), self.bloom_fpr)
            self.blooms[m].update(hashes.tolist())
            bits = max(16, (64 * len(hashes)).bit_length())  # >= 64 buckets per n-gram: < 1.6% pass
            bitmap = np.zeros(1 << bits, bool)
            with np.errstate(over="ignore"):
                bitmap[(hashes * _MIX) >> np.uint64(64 - bits)] = True
            self.bitmaps[m] = (np.packbits(bitmap, bitorder="little").view("<u8"), 64 - bits)
            order = np.argsort(hashes, kind="stable")
            entries = [grams[g] for g in list(grams)]
            counts = np.array([len(e) for e in entries], np.int64)[order]
            pointers = np.zeros(len(grams) + 1, np.int64)
            np.cumsum(counts, out=pointers[1:])
            flat = np.array([pair for g in order.tolist() for pair in entries[g]], np.int64).reshape(-1, 2)
            same_hash = np.unique(hashes, return_counts=True)[1].max(initial=1)  # > 1 only on a 64-bit collision
            gram_values = np.array(list(grams), np.uint64).reshape(len(grams), m)[order]
            self.tables[m] = (hashes[order], gram_values, pointers, flat[:, 0], flat[:, 1], int(same_hash))

    # rbloom filters with Python's own (fastest) hash cannot be serialised: each scan actor rebuilds them (and
    # the bitmaps) from the exact maps it receives, once.
    # The code point tables (a Python pass over every code point, ~1 s) travel with the index (2 MB) instead.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["blooms"], state["bitmaps"], state["tables"]
        state["classes"] = code_point_classes(self.normalize.strip_punctuation, self.normalize.cjk_chars)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build_filters()

    def tokens(self, texts: pa.Array | Sequence[str]) -> tuple[pa.Array, np.ndarray]:
        """The scan's tokens of every text (grouped by text) and the index of the text each token belongs to."""
        buf, starts, ends, owner, *_ = self._spans(texts)
        return pa.array([buf[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist())], pa.string()), owner

    def _groups(self, texts: pa.Array | Sequence[str]) -> list[tuple[np.ndarray | None, tuple]]:
        """The texts' tokens in up to two groups, ASCII texts and the others, each `(the group's text indexes,
        None for all texts; its spans)`: spans = (UTF-8 bytes, starts, ends, the text of each token, each text's
        first token, each token's value, long-token mask), texts numbered within the group. `texts`: an Arrow
        string array (read in place) or a list of str; null counts as empty."""
        texts = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.large_string())
        texts = pc.fill_null(texts, "")
        is_ascii = pc.string_is_ascii(texts)
        if pc.all(is_ascii).as_py() is not False:
            return [(None, self._ascii_spans(texts))]
        mask = is_ascii.to_numpy(zero_copy_only=False)
        return [(np.flatnonzero(mask), self._ascii_spans(texts.filter(is_ascii))),
                (np.flatnonzero(~mask), self._unicode_spans(texts.filter(pc.invert(is_ascii)).to_pylist()))]  # fmt: skip

    def _spans(self, texts: pa.Array | Sequence[str]) -> tuple[bytes, np.ndarray, ...]:
        """`_groups`' spans in one, texts numbered as given (ASCII texts' tokens first)."""
        groups = self._groups(texts)
        if len(groups) == 1:
            return groups[0][1]
        (ascii_docs, a), (other_docs, o) = groups
        a_buf, a_starts, a_ends, a_owner, a_first, a_values, a_long = a
        o_buf, o_starts, o_ends, o_owner, o_first, o_values, o_long = o
        first = np.zeros(len(ascii_docs) + len(other_docs), np.int64)
        first[ascii_docs], first[other_docs] = a_first, o_first + len(a_starts)
        return (a_buf + o_buf, np.r_[a_starts, o_starts + len(a_buf)], np.r_[a_ends, o_ends + len(a_buf)],
                np.r_[ascii_docs[a_owner], other_docs[o_owner]], first, np.r_[a_values, o_values],
                np.r_[a_long, o_long])  # fmt: skip

    def _ascii_spans(self, texts: pa.Array) -> tuple[bytes, np.ndarray, ...]:
        """ASCII texts, as bytes from the Arrow buffers: NFKC is the identity, the rest one byte table."""
        width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
        offsets, data = texts.buffers()[1:3]
        bounds = np.frombuffer(offsets, width)[texts.offset : texts.offset + len(texts) + 1].astype(np.int64)
        raw = data.slice(int(bounds[0]), int(bounds[-1] - bounds[0])).to_pybytes() if data is not None else b""
        bounds -= bounds[0]
        buf = raw.translate(self.ascii_table.tobytes()) + b" " * 8  # the kernel reads 8 bytes at a time
        units = np.frombuffer(buf, np.uint8)
        return buf, *kernels.ascii_tokens(units, kernels.unaligned_words(units), bounds)

    def _unicode_spans(self, texts: list[str]) -> tuple[bytes, np.ndarray, ...]:
        """Other texts: Python's NFKC and `str.lower`, then code points (UTF-32) through the class tables; the
        tokens come back as consecutive UTF-8 strings."""
        cfg = self.normalize
        if cfg.nfkc:
            texts = _nfkc(texts)
        if cfg.lowercase:
            texts = [t.lower() for t in texts]
        units = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
        bounds = np.zeros(len(texts) + 1, np.int64)
        np.cumsum([len(t) for t in texts], out=bounds[1:])
        breaks, own = self.__dict__.get("classes") or code_point_classes(cfg.strip_punctuation, cfg.cjk_chars)
        word = ~breaks[units]
        starts, _ = _token_spans(word, bounds, own[units])
        kept = units[word]  # the tokens' code points, consecutive
        utf8 = np.zeros(len(kept) + 1, np.int64)  # UTF-8 offsets: 1 to 4 bytes per code point
        np.cumsum(1 + (kept >= 0x80) + (kept >= 0x800) + (kept >= 0x10000), out=utf8[1:])
        rank = np.cumsum(word) - word  # index of each word unit among the kept ones
        offsets = utf8[np.r_[rank[starts], len(kept)]] if len(starts) else np.zeros(1, np.int64)
        buf = kept.tobytes().decode("utf-32-le").encode("utf-8")
        first = np.searchsorted(starts, bounds[:-1])
        values, long = kernels.token_values(np.frombuffer(buf, np.uint8), offsets[:-1], offsets[1:])
        return buf, offsets[:-1], offsets[1:], _owners(len(starts), first), first, values, long

    def scan(self, texts: pa.Array | Sequence[str]) -> list[list[Hit]]:
        """Per text, its hits `(example, length, example position, document position)`, in no fixed order."""
        doc, example, length, pos, doc_pos = self.scan_arrays(texts)
        hits: list[list[Hit]] = [[] for _ in range(len(texts))]
        for d, *hit in zip(doc.tolist(), example.tolist(), length.tolist(), pos.tolist(), doc_pos.tolist()):
            hits[d].append(tuple(hit))
        return hits

    def scan_arrays(self, texts: pa.Array | Sequence[str]) -> tuple[np.ndarray, ...]:
        """Every hit of a batch as five int64 arrays: text index, example, length, example position, position
        in the text (tokens). `texts`: an Arrow string array (read in place) or a list of str."""
        found = [np.zeros((0, 5), np.int64)]
        if self.lengths and len(texts):
            for docs, spans in self._groups(texts):
                if len(spans[1]):
                    hits = np.concatenate(self._match(*spans))
                    if docs is not None:
                        hits[:, 0] = docs[hits[:, 0]]
                    found.append(hits)
        return tuple(np.concatenate(found).T)

    def scan_tokens(self, chunk: TokenChunk) -> tuple[np.ndarray, ...]:
        """`scan_arrays` of a chunk the reader tokenised (`reading.TokenChunk`, read with this index's
        `ascii_table`); text index = row index in the chunk."""
        found = [np.zeros((0, 5), np.int64)]
        if self.lengths and len(chunk.spans[1]):
            found += self._match(*chunk.spans)
        if self.lengths and chunk.wide_texts:
            spans = self._unicode_spans(chunk.wide_texts)
            if len(spans[1]):
                hits = np.concatenate(self._match(*spans))
                hits[:, 0] = chunk.wide_rows[hits[:, 0]]
                found.append(hits)
        return tuple(np.concatenate(found).T)

    def _match(self, buf: bytes, starts, ends, owner, doc_start, values, long) -> list[np.ndarray]:
        """Hit columns (text, example, length, example position, token position in the text) of one batch."""
        long = np.flatnonzero(long)
        found, gate_hits = [], np.zeros((0, 3), np.int64)
        with np.errstate(over="ignore"):
            for m in self.exact:  # the lengths up to the gate: every window in one document, hashed
                bitmap, shift = self.bitmaps[m]
                at, h = kernels.window_candidates(values, owner, m, _P_U64, _P_INV_U64, bitmap, shift)
                bloom = self.blooms[m]
                maybe = np.fromiter(map(bloom.__contains__, h.tolist()), bool, count=len(at))
                at, row = self._verify(m, at[maybe], h[maybe], values)
                if len(long):
                    keep = self._long_tokens_equal(buf, starts, ends, values, long, at, m)
                    at, row = at[keep], row[keep]
                _, _, pointers, examples, positions, _ = self.tables[m]
                counts = pointers[row + 1] - pointers[row]
                entry = np.repeat(pointers[row] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
                at = np.repeat(at, counts)
                hit = [owner[at], examples[entry], np.full(len(at), m), positions[entry], at - doc_start[owner[at]]]
                found.append(np.stack(hit, 1))
                if m == self.gate:
                    gate_hits = np.stack([at, examples[entry], positions[entry]], 1)
        found.append(self._longer(gate_hits, owner, doc_start))
        return found

    def _verify(self, m: int, at: np.ndarray, h: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows among `at` (hashes `h`) whose token values equal an n-gram of the exact map, and its row."""
        hashes, gram_values, _, _, _, same_hash = self.tables[m]
        first = np.searchsorted(hashes, h)
        window = values[at[:, None] + np.arange(m)]
        row = np.full(len(at), -1, np.int64)
        for k in range(same_hash):  # one pass unless two n-grams share a 64-bit hash
            r = first + k
            ok = r < len(hashes)
            ok[ok] = hashes[r[ok]] == h[ok]
            ok[ok] = (gram_values[r[ok]] == window[ok]).all(1)
            row[ok] = r[ok]
        keep = row >= 0  # the rest: Bloom false positives (or hash collisions), dropped here
        return at[keep], row[keep]

    def _long_tokens_equal(self, buf, starts, ends, values, long: np.ndarray, at: np.ndarray, m: int) -> np.ndarray:
        """Per window `at[k]..at[k]+m`: do its long tokens (hashed values) have the bytes of the example tokens
        they matched? Each long token in the windows is compared once."""
        lo, hi = np.searchsorted(long, at), np.searchsorted(long, at + m)
        count = hi - lo
        inside = long[np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())]
        bad = [j for j in np.unique(inside).tolist()
               if bytes(buf[starts[j] : ends[j]]) != self.long_tokens.get(int(values[j]))]  # fmt: skip
        if not bad:
            return np.ones(len(at), bool)
        bad = np.array(bad, np.int64)
        return np.searchsorted(bad, at + m) == np.searchsorted(bad, at)

    def _longer(self, gate_hits: np.ndarray, owner: np.ndarray, doc_start: np.ndarray) -> np.ndarray:
        """Hits of the lengths above the gate g, read off the gate's hits (rows `token, example, position`): an
        m-gram matches at a hit when the gate-grams at offsets g, 2g, ... < m - g and m - g matched the same
        example on the same diagonal (they cover it) and it ends in the same document."""
        g, found = self.gate, [np.zeros((0, 5), np.int64)]
        i, ex, pos = gate_hits.T
        span = max(self.example_lengths, default=0) + 1
        # One group per (diagonal, example); a gate hit's key is its group and its position.
        _, group = np.unique((i - pos + span) * len(self.example_lengths) + ex, return_inverse=True)
        keys = np.unique(group * span + pos)
        size = np.array(self.example_lengths, np.int64)[ex]
        for m in (m for m in self.lengths if m > g):
            ok = (pos + m <= size) & (i + m <= len(owner))
            if m not in self.rule_ns:  # an example shorter than some rule n, matched whole
                ok &= size == m
            ok[ok] = owner[i[ok] + m - 1] == owner[i[ok]]
            for k in [*range(g, m - g, g), m - g]:
                ok[ok] = np.isin(group[ok] * span + pos[ok] + k, keys)
            t = i[ok]
            found.append(np.stack([owner[t], ex[ok], np.full(len(t), m), pos[ok], t - doc_start[owner[t]]], 1))
        return np.concatenate(found)


def _nfkc(texts: list[str]) -> list[str]:
    """`unicodedata.normalize("NFKC", t)` of each text, normalising only the span from the first to the last word
    (run between U+0020s) that holds a non-ASCII character: NFKC leaves ASCII as it is, and U+0020 neither
    composes nor reorders with a neighbour (combining class 0, quick check Yes, in no canonical composition), so
    a text normalises word by word. A mostly-ASCII document with a few accented or full-width words close
    together costs those words' normalisation, not its length. The spans come from one numpy pass over all the
    texts' code points."""
    units = np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32)
    bounds = np.zeros(len(texts) + 1, np.int64)
    np.cumsum([len(t) for t in texts], out=bounds[1:])
    wide = np.flatnonzero(units >= 0x80)
    if not len(wide):
        return list(texts)
    firsts = wide[np.minimum(np.searchsorted(wide, bounds[:-1]), len(wide) - 1)] - bounds[:-1]
    lasts = wide[np.maximum(np.searchsorted(wide, bounds[1:]) - 1, 0)] - bounds[:-1]
    out = []
    for t, first, last in zip(texts, firsts.tolist(), lasts.tolist()):
        if t.isascii():  # a text may be ASCII (its escapes decoded); then first and last are not its own
            out.append(t)
            continue
        start = t.rfind(" ", 0, first) + 1
        end = t.find(" ", last + 1)
        end = len(t) if end < 0 else end
        out.append(t[:start] + unicodedata.normalize("NFKC", t[start:end]) + t[end:])
    return out


def _owners(n_tokens: int, first_tokens: np.ndarray) -> np.ndarray:
    """The document of each token, from each document's first token index."""
    marks = np.bincount(first_tokens, minlength=n_tokens + 1)[:n_tokens]
    return np.cumsum(marks) - 1
