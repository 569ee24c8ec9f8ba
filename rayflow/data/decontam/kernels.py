"""The scan's inner loops, compiled with numba: one pass each over a batch's bytes, tokens and windows.

numpy needs a pass (and a temporary array) per step: byte runs, run starts, document cuts, token values, prefix
sums, one hash per window and length, a bitmap gather. Each loop here does its step in one pass with nothing
in between, which is what takes the scan from ~110 to several hundred MB per CPU-second. They compute exactly
what `index.token_value` and `index.ngram_hash` define; `tests/data/decontam/test_index.py` compares them.

The reader's loops are here too: `jsonl_rows` reads plain JSONL lines as ProX's reader (`json.loads`) would,
declining any chunk it cannot be sure of, and `text_tokens` tokenises the texts it found, 64 bytes at a time.
`tests/data/decontam/test_reading.py` compares them with ProX's reader and the index's tokens.

Compiled on first use and cached beside this file (`cache=True`), so a scan actor loads them in milliseconds.
"""

from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

SPACE = 32  # the one break byte after the ASCII path's `bytes.translate`
_Q = np.uint64(0xC2B2AE3D27D4EB4F)  # index._Q: the long-token hash's multiplier
_LONG = np.uint64(0xFF << 56)  # index._LONG: top byte of a long token's value
_LOW56 = np.uint64((1 << 56) - 1)
_MIX = np.uint64(0xD6E8FEB86659FD93)  # index._MIX: spreads the hash over the top bits the bitmap reads
_SPACES = np.uint64(0x2020202020202020)
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_SIX, _LOW6, _ONE = np.uint64(6), np.uint64(63), np.uint64(1)
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
    a set bucket of `bitmap` (bucket = (hash * MIX) >> shift; uint64 words, bucket b = bit b % 64 of word
    b // 64: 8 buckets a byte keep it in cache). The hash rolls: h(s + 1) = (h(s) - v[s]) * p_inv
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
        bucket = (h * _MIX) >> sh
        if owner[s] == owner[s + m - 1] and (bitmap[bucket >> _SIX] >> (bucket & _LOW6)) & _ONE:
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


# JSON whitespace between tokens, for the row reader.
_JSON_SPACE = np.zeros(256, np.bool_)
_JSON_SPACE[[9, 13, 32]] = True  # `\n` never occurs inside a line
_BLANK = np.zeros(256, np.bool_)
_BLANK[[9, 10, 11, 12, 13, 32]] = True  # what `bytes.strip` removes
_MAX_DEPTH = 256  # nesting json.loads and json.dumps both take; deeper lines go to the exact reader
_MAX_DIGITS = 4300  # json.loads refuses longer integers


@numba.njit(cache=True, nogil=True)
def _hex(b) -> int:
    if 48 <= b <= 57:
        return b - 48
    if 97 <= b <= 102:
        return b - 87
    if 65 <= b <= 70:
        return b - 55
    return -1


@numba.njit(cache=True, nogil=True)
def _string(data, i, end, out, o, strict):
    """Decode the JSON string whose opening quote is at `data[i - 1]` into `out[o:]`. Returns (index after the
    closing quote, new `o`), or (-1, o) when json.loads would refuse it, or when `strict` and it holds a lone
    surrogate (then ProX's reader makes the row an error record)."""
    while i < end:
        b = data[i]
        i += 1
        if b == 34:  # "
            return i, o
        if b < 32:  # json.loads (strict) refuses control characters in strings
            return -1, o
        if b != 92:
            out[o] = b
            o += 1
            continue
        if i >= end:
            return -1, o
        e = data[i]
        i += 1
        if e == 117:  # \uXXXX
            i, cp = _code_point(data, i, end)
            if i < 0:
                return -1, o
            if 0xD800 <= cp <= 0xDFFF:
                if strict:
                    return -1, o
                cp = 0xFFFD  # a lone surrogate outside the text and id: the value is not kept
            if cp < 0x80:
                out[o] = cp
                o += 1
            elif cp < 0x800:
                out[o], out[o + 1] = 0xC0 | (cp >> 6), 0x80 | (cp & 63)
                o += 2
            elif cp < 0x10000:
                out[o], out[o + 1], out[o + 2] = 0xE0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)
                o += 3
            else:
                out[o], out[o + 1] = 0xF0 | (cp >> 18), 0x80 | ((cp >> 12) & 63)
                out[o + 2], out[o + 3] = 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)
                o += 4
            continue
        if e == 34 or e == 92 or e == 47:
            out[o] = e
        elif e == 110:
            out[o] = 10
        elif e == 116:
            out[o] = 9
        elif e == 114:
            out[o] = 13
        elif e == 98:
            out[o] = 8
        elif e == 102:
            out[o] = 12
        else:
            return -1, o
        o += 1
    return -1, o


@numba.njit(cache=True, nogil=True)
def _number(data, i, end):
    """End of the JSON number starting at `data[i]` and whether it is an integer, or (-1, False) when json.loads
    would not read it as one (or it is an integer of over 4300 digits)."""
    s = i
    if i < end and data[i] == 45:  # -
        i += 1
    if i >= end or not 48 <= data[i] <= 57:
        return -1, False
    if data[i] == 48:
        i += 1
    else:
        while i < end and 48 <= data[i] <= 57:
            i += 1
    integer = True
    if i < end and data[i] == 46:  # .
        integer = False
        i += 1
        if i >= end or not 48 <= data[i] <= 57:
            return -1, False
        while i < end and 48 <= data[i] <= 57:
            i += 1
    if i < end and (data[i] == 101 or data[i] == 69):  # e E
        integer = False
        i += 1
        if i < end and (data[i] == 43 or data[i] == 45):
            i += 1
        if i >= end or not 48 <= data[i] <= 57:
            return -1, False
        while i < end and 48 <= data[i] <= 57:
            i += 1
    if integer and i - s > _MAX_DIGITS:
        return -1, False
    return i, integer


@numba.njit(cache=True, nogil=True)
def _literal(data, i, end, word):
    if i + len(word) > end:
        return -1
    for j in range(len(word)):
        if data[i + j] != word[j]:
            return -1
    return i + len(word)


_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_NULL = np.frombuffer(b"null", np.uint8)


@numba.njit(cache=True, nogil=True)
def _key(data, i, end, scratch):
    """Index after an object member's `"key":` starting at `data[i]` (a quote), or -1 when it is not one."""
    if i >= end or data[i] != 34:
        return -1
    i, _ = _string(data, i + 1, end, scratch, 0, False)
    if i < 0:
        return -1
    while i < end and _JSON_SPACE[data[i]]:
        i += 1
    if i >= end or data[i] != 58:  # :
        return -1
    return i + 1


@numba.njit(cache=True, nogil=True)
def _skip_value(data, i, end, scratch):
    """Index after the JSON value at `data[i]` (whitespace skipped before it), or -1 when json.loads would refuse
    it or it nests deeper than _MAX_DEPTH. `scratch` (uint8, at least the line's length) takes strings."""
    stack = np.empty(_MAX_DEPTH, np.uint8)  # 0: in an array, 1: in an object
    depth = 0
    while True:
        while i < end and _JSON_SPACE[data[i]]:
            i += 1
        if i >= end:
            return -1
        b = data[i]
        if b == 123 or b == 91:  # { [
            if depth == _MAX_DEPTH:
                return -1
            i += 1
            while i < end and _JSON_SPACE[data[i]]:
                i += 1
            if i < end and data[i] == b + 2:  # {} []
                i += 1
            else:
                stack[depth] = b == 123
                depth += 1
                if b == 123:  # the first key
                    i = _key(data, i, end, scratch)
                    if i < 0:
                        return -1
                continue
        elif b == 34:
            i, _ = _string(data, i + 1, end, scratch, 0, False)
        elif b == 45 or 48 <= b <= 57:
            i, _ = _number(data, i, end)
        elif b == 116:
            i = _literal(data, i, end, _TRUE)
        elif b == 102:
            i = _literal(data, i, end, _FALSE)
        elif b == 110:
            i = _literal(data, i, end, _NULL)
        else:  # NaN, Infinity (json.loads reads them; the exact reader will) or not JSON
            return -1
        if i < 0:
            return -1
        # After a value: close containers or go on to the next member.
        while True:
            if depth == 0:
                return i
            while i < end and _JSON_SPACE[data[i]]:
                i += 1
            if i >= end:
                return -1
            c = data[i]
            i += 1
            if c == 44:  # ,
                if stack[depth - 1] == 1:
                    while i < end and _JSON_SPACE[data[i]]:
                        i += 1
                    i = _key(data, i, end, scratch)
                    if i < 0:
                        return -1
                break
            if c == (125 if stack[depth - 1] == 1 else 93):  # } or ]
                depth -= 1
                continue
            return -1


@numba.njit(cache=True, nogil=True)
def token_values_at(low, words, starts, ends, values, long, nul):
    """`token_value` of every token `low[starts[k]:ends[k]]` (`words`: `low`'s `unaligned_words`) into
    `values[k]`: the bytes of one 8-byte load when at most 8 and no NUL, else the long hash (`long[k]` set).
    `nul`: may a token hold a NUL byte (else that check is skipped)."""
    for k in range(len(starts)):
        s, e = starts[k], ends[k]
        x = words[s]
        short = e - s <= 8 and (not nul or _first_zero_byte(x) >= e - s)
        long[k] = not short
        values[k] = x & _LOW_BYTES[min(e - s, 8)]
        if not short:
            values[k] = _long_value(low, s, e)


@numba.njit(cache=True, nogil=True)
def _code_point(data, i, end):
    """The code point of the `\\uXXXX` escape whose hex digits start at `data[i]` (a surrogate pair read as
    one), and the index after it; (-1, 0) when not JSON."""
    if i + 4 > end:
        return -1, 0
    cp = 0
    for j in range(4):
        h = _hex(data[i + j])
        if h < 0:
            return -1, 0
        cp = cp * 16 + h
    i += 4
    if 0xD800 <= cp <= 0xDBFF and i + 6 <= end and data[i] == 92 and data[i + 1] == 117:
        low = 0
        for j in range(4):
            h = _hex(data[i + 2 + j])
            low = low * 16 + h if h >= 0 and low >= 0 else -1
        if 0xDC00 <= low <= 0xDFFF:
            return i + 6, 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
    return i, cp


# Bytes a JSON string holds as themselves, ASCII (not `"`, `\\`, a control character or non-ASCII).
_PLAIN = np.zeros(256, np.bool_)
_PLAIN[32:127] = True
_PLAIN[[34, 92]] = False


@numba.njit(cache=True, nogil=True)
def _plain_end(data, j):
    """Index of the first byte at or after `data[j]` that a JSON string does not hold as itself in ASCII (`"`,
    `\\`, a control character, DEL or non-ASCII), or len(data): 64 bytes at a time, as a mask LLVM vectorises."""
    n = len(data)
    while j + 64 <= n:
        block = data[j : j + 64]
        stop = np.uint64(0)
        for t in range(64):
            b = block[t]
            stop |= np.uint64((b < 32) | (b == 34) | (b == 92) | (b > 126)) << np.uint64(t)
        if stop:
            return j + trailing_zeros(stop)
        j += 64
    while j < n and _PLAIN[data[j]]:
        j += 1
    return j


@numba.njit(cache=True, nogil=True)
def jsonl_rows(data, text_key, id_key, max_line_bytes, max_text_chars, decoded, scratch):
    """Read a chunk of JSONL lines (uint8, valid UTF-8) the way ProX's reader does, when every line is plain
    enough to be sure of that: one JSON object per non-blank line, its text field a string of at most
    `max_text_chars` characters, its id field absent, null, a string or an integer, neither holding a lone
    surrogate, no line over `max_line_bytes` or nesting deeper than _MAX_DEPTH, no NaN/Infinity, no repeated
    text or id key, no escaped key. Anything else: `ok` False, and the caller reads the chunk another way.
    Whether a text is blank is left to the caller. `decoded`, `scratch`: uint8 buffers of len(data).

    Returns `(ok, lines, rows, id_kind, id_offsets, id_bytes, text_spans, escaped, n_bytes, wide)`:
    the number of lines (`\\n`-ended, and a last one without), per row its line index, 0 = no id (ProX makes one) / 1 = a string / 2 = an integer (its digits, as `str` writes
    them), the ids' UTF-8 back to back (int64 offsets, len = rows + 1); the text's span, in `data` between its
    quotes, or decoded in `decoded` when it holds an escape or a non-ASCII byte (`escaped`); its UTF-8 bytes,
    and whether it has a non-ASCII character."""
    n = len(data)
    lines = 0
    for i in range(n):
        lines += data[i] == 10
    lines += n > 0 and data[n - 1] != 10
    rows = np.empty(lines, np.int64)
    id_offsets = np.zeros(lines + 1, np.int64)
    id_kind = np.zeros(lines, np.int8)
    id_bytes = np.empty(n, np.uint8)
    text_spans = np.empty((lines, 2), np.int64)
    escaped = np.zeros(lines, np.bool_)
    n_bytes = np.empty(lines, np.int64)
    wide = np.zeros(lines, np.bool_)
    r, line, start, io_, do = 0, 0, 0, 0, 0
    fail = (False, lines, rows, id_kind, id_offsets, id_bytes, text_spans, escaped, n_bytes, wide)
    while start < n:
        i = start
        while i < n and _BLANK[data[i]] and data[i] != 10:  # ProX skips lines `bytes.strip` empties
            i += 1
        if i < n and data[i] != 10:
            # Parsed up to the line's end: a raw newline is in no JSON token, so reading stops there.
            i = start
            while i < n and _JSON_SPACE[data[i]]:
                i += 1
            if i >= n or data[i] != 123:  # {
                return fail
            i += 1
            while i < n and _JSON_SPACE[data[i]]:
                i += 1
            seen_text, seen_id = False, False
            kind, i0 = 0, io_
            if i < n and data[i] == 125:
                i += 1
            else:
                while True:
                    if i >= n or data[i] != 34:
                        return fail
                    ks = i + 1
                    i = ks
                    while i < n and data[i] != 34 and data[i] != 92 and data[i] >= 32:
                        i += 1
                    if i >= n or data[i] != 34:  # an escaped key (or not JSON): read the exact way
                        return fail
                    is_text = i - ks == len(text_key)
                    is_id = i - ks == len(id_key)
                    for j in range(i - ks):
                        is_text = is_text and data[ks + j] == text_key[j]
                        is_id = is_id and data[ks + j] == id_key[j]
                    i += 1
                    while i < n and _JSON_SPACE[data[i]]:
                        i += 1
                    if i >= n or data[i] != 58:  # :
                        return fail
                    i += 1
                    while i < n and _JSON_SPACE[data[i]]:
                        i += 1
                    if i >= n:
                        return fail
                    if is_text:
                        if seen_text or data[i] != 34:
                            return fail
                        seen_text = True
                        i += 1
                        j = _plain_end(data, i)
                        if j < n and data[j] == 34:  # no escape, all ASCII: the text is these bytes
                            text_spans[r, 0], text_spans[r, 1] = i, j
                            n_bytes[r], chars, i = j - i, j - i, j + 1
                        else:
                            d0 = do
                            i, do = _string(data, i, n, decoded, do, True)
                            if i < 0:
                                return fail
                            chars = 0
                            for j in range(d0, do):
                                chars += (decoded[j] & 0xC0) != 0x80
                                wide[r] |= decoded[j] >= 0x80
                            text_spans[r, 0], text_spans[r, 1] = d0, do
                            escaped[r], n_bytes[r] = True, do - d0
                        if chars > max_text_chars:
                            return fail
                    elif is_id:
                        if seen_id:
                            return fail
                        seen_id = True
                        b = data[i]
                        if b == 34:
                            kind = 1
                            i, io_ = _string(data, i + 1, n, id_bytes, i0, True)
                        elif b == 45 or 48 <= b <= 57:
                            s = i
                            i, integer = _number(data, i, n)
                            if i < 0 or not integer or (i - s == 2 and b == 45 and data[s + 1] == 48):
                                return fail  # a float id, or -0 (str(int) writes 0)
                            kind = 2
                            for j in range(s, i):
                                id_bytes[i0 + j - s] = data[j]
                            io_ = i0 + i - s
                        else:
                            i = _literal(data, i, n, _NULL)
                    else:
                        i = _skip_value(data, i, n, scratch)
                    if i < 0:
                        return fail
                    while i < n and _JSON_SPACE[data[i]]:
                        i += 1
                    if i < n and data[i] == 44:  # ,
                        i += 1
                        while i < n and _JSON_SPACE[data[i]]:
                            i += 1
                        continue
                    if i < n and data[i] == 125:  # }
                        i += 1
                        break
                    return fail
            while i < n and _JSON_SPACE[data[i]]:
                i += 1
            if (i < n and data[i] != 10) or not seen_text or i - start > max_line_bytes:
                return fail
            rows[r], id_kind[r], id_offsets[r + 1] = line, kind, io_
            r += 1
        while i < n and data[i] != 10:  # a blank line's rest
            i += 1
        line += 1
        start = i + 1
    return (True, lines, rows[:r], id_kind[:r], id_offsets[: r + 1], id_bytes[:io_], text_spans[:r], escaped[:r],
            n_bytes[:r], wide[:r])  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _translate(src, s, e, low, o, lo, hi, lower):
    """`low[o:o + e - s]` = `src[s:e]` (ASCII) through the index's table, without a per-byte table lookup (which
    LLVM cannot vectorise): a byte is a break (-> space) when its bit is set in `lo` (bytes 0-63) or `hi`
    (64-127), else upper case is lowered when `lower`. Plain arithmetic, so this loop runs on vector units."""
    text, out = src[s:e], low[o : o + e - s]  # slices: the loop indexes from 0 (no offset arithmetic per byte)
    for i in range(e - s):
        b = text[i]
        mask = lo if b < 64 else hi
        brk = (mask >> np.uint64(b & 63)) & _ONE
        upper = lower & (np.uint8(b - 65) < np.uint8(26))
        out[i] = np.uint8(SPACE) if brk else np.uint8(b + 32 * upper)


@numba.njit(cache=True, nogil=True)
def text_tokens(data, decoded, text_spans, escaped, skip, table, low, words, starts, ends, owner, values, long):
    """The tokens of texts (ASCII bytes) as `ascii_tokens` finds them in the translated bytes. Text r is `data`
    (or `decoded` when `escaped[r]`) at `text_spans[r]`; texts with `skip[r]` get none. Each text goes through
    `table` (the index's ASCII table: breaks -> space, A-Z lowered or kept, the rest kept; `Tokeniser` checks
    that form) into `low` with a space after it (`words`: `low`'s `unaligned_words`); then 64 bytes at a time:
    a bit mask of their token bytes, whose run starts and ends are the token bounds. Per token: its span in
    `low`, text (`owner`) and `token_value` (as `token_values_at`). Buffers: `low` at least the texts' bytes + 1
    per text + 64, the token arrays their bytes // 2 + 5.

    Returns `(ok, k, first)`: False when a text has no token (blank, or punctuation only: the exact reader
    tells), the number of tokens, and each text's first token index."""
    lo, hi = np.uint64(0), np.uint64(0)
    for c in range(64):
        lo |= np.uint64(table[c] == SPACE) << np.uint64(c)
        hi |= np.uint64(table[c + 64] == SPACE) << np.uint64(c)
    lower = table[65] == 97
    n_docs = len(text_spans)
    bounds = np.empty(n_docs + 1, np.int64)
    o, nul = 0, False
    for r in range(n_docs):
        bounds[r] = o
        if skip[r]:
            continue
        s, e = text_spans[r, 0], text_spans[r, 1]
        if escaped[r]:
            _translate(decoded, s, e, low, o, lo, hi, lower)
            for at in range(s, e):
                nul |= decoded[at] == 0  # only an escape (\\u0000) puts a NUL in a text
        else:
            _translate(data, s, e, low, o, lo, hi, lower)
        o += e - s
        low[o] = SPACE
        o += 1
    bounds[n_docs] = o
    while o % 64:
        low[o] = SPACE
        o += 1
    ks, ke, carry = 0, 0, np.uint64(0)
    for w in range(0, o, 64):
        token = np.uint64(0)  # bit j: byte w + j is in a token
        block = low[w : w + 64]
        for j in range(64):
            token |= np.uint64(block[j] != SPACE) << np.uint64(j)
        before = (token << _ONE) | carry  # bit j: byte w + j - 1 is in a token
        carry = token >> np.uint64(63)
        st, en = token & ~before, ~token & before
        while st:
            starts[ks] = w + trailing_zeros(st)
            st &= st - _ONE
            ks += 1
        while en:
            ends[ke] = w + trailing_zeros(en)
            en &= en - _ONE
            ke += 1
    k = ks
    first = np.searchsorted(starts[:k], bounds[:-1])
    for r in range(n_docs):
        last = first[r + 1] if r + 1 < n_docs else k
        if last == first[r] and not skip[r]:
            return False, k, first
        owner[first[r] : last] = r
    token_values_at(low, words, starts[:k], ends[:k], values, long, nul)
    return True, k, first
