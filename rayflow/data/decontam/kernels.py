"""The scan's inner loops, compiled with numba: one pass each over a batch's bytes, tokens and windows.

numpy needs a pass (and a temporary array) per step: byte runs, run starts, document cuts, token values, prefix
sums, one hash per window and length, a bitmap gather. Each loop here does its step in one pass with nothing
in between, which is what takes the scan from ~110 to several hundred MB per CPU-second. They compute exactly
what `index.token_value` and `index.ngram_hash` define; `tests/data/decontam/test_index.py` compares them.

Compiled on first use and cached beside this file (`cache=True`), so a scan actor loads them in milliseconds.
"""

from __future__ import annotations

import numba
import numpy as np

SPACE = 32  # the one break byte after the ASCII path's `bytes.translate`
_Q = np.uint64(0xC2B2AE3D27D4EB4F)  # index._Q: the long-token hash's multiplier
_LONG = np.uint64(0xFF << 56)  # index._LONG: top byte of a long token's value
_LOW56 = np.uint64((1 << 56) - 1)
_MIX = np.uint64(0xD6E8FEB86659FD93)  # index._MIX: spreads the hash over the top bits the bitmap reads
_SPACES = np.uint64(0x2020202020202020)
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], np.uint64)  # low n bytes


@numba.njit(cache=True, nogil=True)
def ascii_tokens(buf: np.ndarray, words: np.ndarray, bounds: np.ndarray):
    """Tokens of translated ASCII documents (maximal runs of non-space bytes inside one document) and their
    values, in one pass over the bytes.

    `buf`: uint8, documents back to back, then 8 spaces; `words`: the same memory as unaligned little-endian
    uint64s, one starting at every byte (`unaligned_words`); `bounds`: int64 document offsets (len = documents
    + 1). Returns int64 `starts`, `ends` (exclusive), `owner` (each token's document), `first` (each document's
    first token index; the next document's when it has none), and `token_values`'s uint64 values and long mask.
    A token of up to 8 bytes is found and valued from one 8-byte load: the first space byte in it
    (a zero byte of the load XOR spaces) ends it."""
    count = 0
    for d in range(len(bounds) - 1):
        prev = SPACE
        for i in range(bounds[d], bounds[d + 1]):
            count += (buf[i] != SPACE) & (prev == SPACE)
            prev = buf[i]
    starts = np.empty(count, np.int64)
    ends = np.empty(count, np.int64)
    owner = np.empty(count, np.int64)
    first = np.empty(len(bounds) - 1, np.int64)
    values = np.empty(count, np.uint64)
    long = np.zeros(count, np.bool_)
    k = 0
    for d in range(len(bounds) - 1):
        first[d] = k
        i, end = bounds[d], bounds[d + 1]
        while i < end:
            if buf[i] == SPACE:
                i += 1
                continue
            x = words[i]
            s = i
            i += min(_first_zero_byte(x ^ _SPACES), end - i)  # the first space or the end, within 8 bytes
            if i - s == 8:  # no space in the load: the token may go on
                while i < end and buf[i] != SPACE:
                    i += 1
            starts[k], ends[k], owner[k] = s, i, d
            if i - s <= 8 and _first_zero_byte(x) >= i - s:  # short, no NUL: its bytes
                values[k] = x & _LOW_BYTES[i - s]
            else:
                values[k] = _long_value(buf, s, i)
                long[k] = True
            k += 1
    return starts, ends, owner, first, values, long


def unaligned_words(buf: np.ndarray) -> np.ndarray:
    """A uint64 view of `buf` (uint8, at least 8 long) starting at every byte: words[i] = buf[i:i + 8], little-endian."""
    return np.ndarray((len(buf) - 7,), "<u8", buffer=buf, strides=(1,))


@numba.njit(cache=True, nogil=True, inline="always")
def _first_zero_byte(x: np.uint64) -> int:
    """Index (0-7) of the lowest zero byte of `x`, 8 when it has none. The lowest bit the zero-byte test sets is
    exact (the test's false positives only lie above a true zero byte)."""
    z = (x - _ONES) & ~x & _HIGHS
    if z == 0:
        return 8
    below = (z & (~z + np.uint64(1))) - np.uint64(1)  # bits under the lowest set one, bit 8 * index + 7
    return int(((below & _ONES) * _ONES) >> np.uint64(56)) - 1  # bytes 0..index have bit 0 set: summed


@numba.njit(cache=True, nogil=True, inline="always")
def _long_value(buf: np.ndarray, s: int, e: int) -> np.uint64:
    """`index.token_value` of a long token `buf[s:e]`: its 8-byte chunks folded into a hash, top byte 0xFF."""
    h = np.uint64(0)
    for c in range(s, e, 8):
        chunk = np.uint64(0)
        for j in range(min(e - c, 8)):
            chunk |= np.uint64(buf[c + j]) << np.uint64(8 * j)
        h = h * _Q + chunk
    return ((h ^ np.uint64(e - s)) & _LOW56) | _LONG


@numba.njit(cache=True, nogil=True)
def token_values(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """`index.token_value` of every span `buf[starts[k]:ends[k]]` (UTF-8 bytes): the bytes little-endian when
    at most 8 and no NUL, else the long hash (top byte 0xFF). Returns the uint64 values and a bool mask of the
    long (hashed) tokens."""
    values = np.empty(len(starts), np.uint64)
    long = np.zeros(len(starts), np.bool_)
    for k in range(len(starts)):
        s, e = starts[k], ends[k]
        v = np.uint64(0)
        nul = False
        for j in range(min(e - s, 8)):
            b = buf[s + j]
            nul |= b == 0
            v |= np.uint64(b) << np.uint64(8 * j)
        if e - s <= 8 and not nul:
            values[k] = v
        else:
            values[k] = _long_value(buf, s, e)
            long[k] = True
    return values, long


@numba.njit(cache=True, nogil=True)
def window_candidates(
    values: np.ndarray, owner: np.ndarray, m: int, p: np.uint64, p_inv: np.uint64, bitmap: np.ndarray, shift: int
):
    """Start positions and hashes of the m-token windows inside one document whose `index.ngram_hash` falls in
    a set bucket of `bitmap` (bucket = (hash * MIX) >> shift). The hash rolls: h(s + 1) = (h(s) - v[s]) * p_inv
    + v[s + m] * p**(m - 1), exact modulo 2**64 because p is odd."""
    n = len(values) - m + 1
    at = np.empty(max(n, 0), np.int64)
    hashes = np.empty(max(n, 0), np.uint64)
    if n <= 0:
        return at, hashes
    top = np.uint64(1)
    h = np.uint64(0)
    for i in range(m):
        h += values[i] * top
        if i < m - 1:
            top *= p
    found = 0
    sh = np.uint64(shift)
    for s in range(n):
        if s:
            h = (h - values[s - 1]) * p_inv + values[s + m - 1] * top
        if owner[s] == owner[s + m - 1] and bitmap[(h * _MIX) >> sh]:
            at[found] = s
            hashes[found] = h
            found += 1
    return at[:found], hashes[:found]


@numba.njit(cache=True, nogil=True)
def line_marks(data: np.ndarray):
    """One pass over a chunk of JSONL bytes (uint8) for the reader's checks. Returns per `\\n`-separated line its
    start and end (exclusive, without the `\\n`; a last line without one included), whether it is blank (only
    bytes that `bytes.strip` removes), and its count of `{` and `[` (a bound on its nesting depth); and the
    longest run of ASCII digits in the chunk."""
    n_lines = 0
    for i in range(len(data)):
        n_lines += data[i] == 10
    n_lines += len(data) > 0 and data[len(data) - 1] != 10
    starts = np.empty(n_lines, np.int64)
    ends = np.empty(n_lines, np.int64)
    blank = np.empty(n_lines, np.bool_)
    brackets = np.empty(n_lines, np.int64)
    line, start, longest = 0, 0, 0
    while start < len(data):
        end, run, opened, empty = start, 0, 0, True
        while end < len(data) and data[end] != 10:
            b = data[end]
            digit = (b >= 48) & (b <= 57)
            run = (run + 1) * digit
            longest = max(longest, run)
            opened += (b == 123) | (b == 91)
            empty &= (b == 32) | ((b >= 9) & (b <= 13))
            end += 1
        starts[line], ends[line], blank[line], brackets[line] = start, end, empty, opened
        line += 1
        start = end + 1
    return starts, ends, blank, brackets, longest
