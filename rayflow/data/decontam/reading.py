"""Reading the corpus for the scan: plain JSONL in large Arrow chunks, everything else through ProX's reader.

ProX's reader (`rayflow.data.prox.reader.read_rows`) defines what a row is: `(source, row)` keys, the 0-based
line index (blank lines are not rows), and an error record for each bad line. It goes line by line in Python
(`json.loads`, one dict per row), which costs several times what the scan itself does. For an uncompressed
JSONL file this module reads `chunk_bytes` of whole lines at a time and parses them with Arrow's JSON reader
(only the text and id fields), and keeps a chunk only when it can tell that ProX would read every one of its
lines the same way: valid UTF-8, one JSON object per non-blank line, no line over `max_line_bytes`, a string id
(or an integer one, written as `str` writes it, or none), and a text that is a non-blank string of at most
`max_text_chars` characters. Arrow refuses lone surrogates and repeated keys, so those chunks fall back too. On
the first chunk it cannot vouch for, the rest of the file goes through ProX's reader, from that chunk's first
row, so every row is read exactly as ProX reads it. Compressed JSONL and Parquet always go through ProX.

Plain Python and pyarrow; no Ray.
"""

from __future__ import annotations

import codecs
from collections.abc import Container, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pj

from rayflow.data.decontam import kernels
from rayflow.data.prox.reader import READ_SCHEMA, InputFile, ReadOptions, read_rows

# ProX's read rows without `extra`: the scan reads only the id and the text.
ROWS_SCHEMA = READ_SCHEMA.remove(READ_SCHEMA.get_field_index("extra"))
# What json.loads refuses and Arrow reads: integers of over 4300 digits, nesting deeper than Python's recursion
# limit (fewer brackets than _DEPTH on a line cannot nest that deep).
_MAX_DIGITS = 4300
_DEPTH = 500  # fewer brackets than this on a line cannot nest deeper than json.loads goes


class _Skip(Container[int]):
    """Rows ProX's reader skips on fallback: those before the chunk it takes over from, and those already done."""

    def __init__(self, before: int, done: Container[int]):
        self.before, self.done = before, done

    def __contains__(self, row: object) -> bool:
        return row < self.before or row in self.done  # type: ignore[operator]


@dataclass
class TokenChunk:
    """A chunk read by `kernels.jsonl_rows` and `text_tokens`: its good rows (ids, `row` indexes, the texts' UTF-8 bytes) and the
    texts' tokens, ready for `EvalIndex.scan_tokens`. `spans`: the ASCII texts' tokens (`EvalIndex`'s spans, row
    = index in this chunk); `wide_rows`/`wide_texts`: the rows whose text has a non-ASCII character, and those
    texts (tokenised by the index as Unicode)."""

    ids: pa.Array
    rows: np.ndarray
    n_bytes: np.ndarray
    spans: tuple
    wide_rows: np.ndarray
    wide_texts: list[str]


class Tokeniser:
    """What `read_chunks` tokenises plain chunks with: the index's ASCII byte table (`EvalIndex.ascii_table`)
    and the compiled passes' buffers, kept from chunk to chunk (fresh memory costs more than the passes; a
    `TokenChunk`'s token arrays are views of them, valid until the next chunk is read)."""

    def __init__(self, ascii_table: np.ndarray):
        # `kernels.text_tokens` computes the table instead of looking it up: breaks -> space, A-Z all lowered
        # or all kept, every other byte kept. The index builds no other kind.
        codes = np.arange(256)
        upper = (codes >= 65) & (codes <= 90)
        lowered = np.where(upper & (ascii_table[65] == 97), codes + 32, codes)
        if not ((ascii_table == 32) | (ascii_table == lowered)).all() or (ascii_table[128:] == 32).any():
            raise ValueError("ascii_table: not an index's ASCII table (breaks -> space, A-Z lowered or kept)")
        self.table = ascii_table
        self._size = -1

    def buffers(self, n: int) -> tuple[np.ndarray, ...]:
        """`(decoded, scratch, low, words, starts, ends, owner, values, long)` for a chunk of `n` bytes."""
        if n > self._size:
            self._size = max(n, 2 * self._size)
            low = np.empty(self._size + 64, np.uint8)  # text_tokens pads to 64 bytes
            cap = self._size // 2 + 5
            self._buffers = (np.empty(self._size, np.uint8), np.empty(self._size, np.uint8), low,
                             kernels.unaligned_words(low), *(np.empty(cap, np.int32) for _ in range(3)),
                             np.empty(cap, np.uint64), np.empty(cap, np.bool_))  # fmt: skip
        return self._buffers


def read_chunks(
    fs: pafs.FileSystem,
    file: InputFile,
    options: ReadOptions,
    skip: Container[int],
    chunk_bytes: int,
    tokeniser: Tokeniser | None = None,
) -> Iterator[pa.Table | TokenChunk]:
    """The file's rows not in `skip`, as `ROWS_SCHEMA` tables of about `chunk_bytes` of input each; bad rows are
    ProX's error records (`error` set, `text` empty). With a `tokeniser`, a chunk of plain JSONL lines none of
    which is skipped comes as a `TokenChunk` instead: read and tokenised in one compiled pass, no text column."""
    fast = file.format == "jsonl" and not file.path.endswith((".gz", ".zst", ".bz2"))
    start_row = 0
    if fast:
        row = 0
        for chunk in _line_chunks(fs, file.path, chunk_bytes, options.max_line_bytes):
            table, lines = (None, 0) if chunk is None else _read(chunk, row, file, options, skip, tokeniser)
            if table is None:
                start_row = row
                break
            row += lines
            if isinstance(table, pa.Table) and (skip_rows := [r for r in table.column("row").to_pylist() if r in skip]):
                table = table.filter(pc.invert(pc.is_in(table.column("row"), pa.array(skip_rows, pa.int64()))))
            if len(table.rows if isinstance(table, TokenChunk) else table):
                yield table
        else:
            return
    yield from _prox_chunks(fs, file, options, _Skip(start_row, skip), chunk_bytes)


def _prox_chunks(fs, file: InputFile, options: ReadOptions, skip: Container[int], chunk_bytes: int):
    """ProX's row batches, gathered into tables of about `chunk_bytes` of text."""
    rows, size = [], 0
    for batch in read_rows(fs, file, options, skip):  # type: ignore[arg-type]
        rows += batch
        size += sum(len(row["text"]) + 16 for row in batch)
        if size >= chunk_bytes:
            yield _table(rows)
            rows, size = [], 0
    if rows:
        yield _table(rows)


def _table(rows: list[dict]) -> pa.Table:
    """ProX's rows as a `ROWS_SCHEMA` table. Column by column with inferred types, then cast: building a string
    array from Python strings with the type given runs at a few MB/s (pyarrow 26), inferred at hundreds."""
    columns = []
    for field in ROWS_SCHEMA:
        column = pa.array([row[field.name] for row in rows])
        columns.append(column if column.type == field.type else column.cast(field.type))
    return pa.table(columns, schema=ROWS_SCHEMA)


def _line_chunks(fs: pafs.FileSystem, path: str, chunk_bytes: int, max_line_bytes: int):
    """Runs of whole lines, about `chunk_bytes` each (a line longer than that is a chunk of its own), as Arrow
    buffers; None and the end when a line grows past `max_line_bytes` (ProX's reader skips such a line without
    holding it). Each chunk is a slice of one read, and the next read starts after its last newline: no bytes
    are copied or carried over, and the reads' memory comes from Arrow's pool, reused from chunk to chunk (fresh
    memory's page faults cost more than the copies did)."""
    with fs.open_input_file(path) as f:
        size, at = f.size(), 0
        while at < size:
            n = min(chunk_bytes, size - at)
            while True:
                f.seek(at)
                block = f.read_buffer(n)
                cut = _line_end(block)
                if cut or at + n == size:
                    break
                if n > max_line_bytes:
                    yield None
                    return
                n = min(2 * n, size - at)  # a line longer than the chunk: read on from the same offset
            chunk = block.slice(0, cut) if cut else block  # no newline: the file's last line
            at += len(chunk)
            yield chunk


def _line_end(block: pa.Buffer) -> int:
    """The index after `block`'s last newline, 0 when it has none (searched from the end, 64 KB at a time)."""
    end = len(block)
    while end > 0:
        start = max(0, end - (1 << 16))
        found = block.slice(start, end - start).to_pybytes().rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _read(chunk: pa.Buffer | bytes, first_row: int, file: InputFile, options: ReadOptions, skip: Container[int],
          tokeniser: Tokeniser | None) -> tuple[pa.Table | TokenChunk | None, int]:  # fmt: skip
    """The chunk's rows and its number of lines, or None when ProX might read any line of it differently:
    tokenised by the compiled passes when a `tokeniser` is given, every line is plain and none is in `skip`,
    else by Arrow's JSON reader."""
    bom = len(codecs.BOM_UTF8)
    if first_row == 0 and bytes(memoryview(chunk)[:bom]) == codecs.BOM_UTF8:
        chunk = b" " * bom + memoryview(chunk)[bom:]  # ProX drops it; a space keeps offsets
    if np.frombuffer(chunk, np.uint8).max(initial=0) >= 0x80:
        offsets = pa.array([0, len(chunk)], pa.int32()).buffers()[1]
        try:  # Arrow's UTF-8 check (several times `bytes.decode`'s speed); neither JSON pass checks it
            pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(chunk)]).cast(pa.string())
        except pa.ArrowInvalid:
            return None, 0
    if tokeniser is not None and (read := _tokens(chunk, first_row, file, options, skip, tokeniser))[0]:
        return read
    return _parse(chunk, first_row, file, options)


def _tokens(chunk: pa.Buffer | bytes, first_row: int, file: InputFile, options: ReadOptions, skip: Container[int],
            tokeniser: Tokeniser) -> tuple[TokenChunk | None, int]:  # fmt: skip
    """The chunk by `kernels.jsonl_rows` and `kernels.text_tokens` and its number of lines, or None when they
    cannot vouch for every line or a row is skipped."""
    text_key, id_key = options.text_field.encode(), options.id_field.encode()
    if text_key == id_key:
        return None, 0
    decoded, scratch, *tokens = tokeniser.buffers(len(chunk))
    data = np.frombuffer(chunk, np.uint8)
    ok, lines, rows, id_kind, id_offsets, id_bytes, text_spans, escaped, n_bytes, wide = kernels.jsonl_rows(
        data, np.frombuffer(text_key, np.uint8), np.frombuffer(id_key, np.uint8), options.max_line_bytes,
        options.max_text_chars, decoded, scratch,
    )  # fmt: skip
    rows += first_row
    if not ok or (skip and any(r in skip for r in rows.tolist())):
        return None, 0
    wide_rows = np.flatnonzero(wide)
    wide_texts = [decoded[s:e].tobytes().decode() for s, e in text_spans[wide_rows].tolist()]  # decoded: escaped
    if any(not t.strip() for t in wide_texts):  # blank: an error record, made the exact way
        return None, 0
    decoded = decoded.view()
    decoded.flags.writeable = False  # the type `data` has: one compiled loop reads either
    ok, k, first = kernels.text_tokens(data, decoded, text_spans, escaped, wide, tokeniser.table, *tokens)
    if not ok:
        return None, 0
    ids = pa.StringArray.from_buffers(len(rows), pa.py_buffer(id_offsets.astype(np.int32)), pa.py_buffer(id_bytes))
    if (missing := id_kind == 0).any():
        default = pc.binary_join_element_wise(file.source, pa.array(rows).cast(pa.string()), ":")
        ids = pc.if_else(pa.array(missing), default, ids)
    low, _, starts, ends, owner, values, long = tokens
    spans = (low, starts[:k], ends[:k], owner[:k], first, values[:k], long[:k])  # _match's order
    return TokenChunk(ids, rows, n_bytes, spans, wide_rows, wide_texts), lines


def _parse(chunk: pa.Buffer | bytes, first_row: int, file: InputFile, options: ReadOptions) -> tuple[pa.Table | None, int]:
    """The chunk's rows read by Arrow's JSON reader and its number of lines, or None when ProX might read any
    line of it differently."""
    starts, ends, blank, brackets, digits = kernels.line_marks(np.frombuffer(chunk, np.uint8))
    if (ends - starts).max(initial=0) > options.max_line_bytes or digits > _MAX_DIGITS:
        return None, 0
    if brackets.max(initial=0) >= _DEPTH:  # json.loads could reach its recursion limit on that line
        return None, 0
    rows = np.flatnonzero(~blank)
    if not len(rows):
        return ROWS_SCHEMA.empty_table(), len(starts)
    if len(rows) < len(starts):  # Arrow skips blank lines itself; dropping them lets the count check each line
        view = memoryview(chunk)
        chunk = b"\n".join(view[s:e] for s, e in zip(starts[rows].tolist(), ends[rows].tolist()))
    table = None
    for id_type in (pa.string(), pa.int64()):
        try:
            table = pj.read_json(
                pa.BufferReader(chunk),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(chunk) + 1),
                parse_options=pj.ParseOptions(
                    explicit_schema=pa.schema([(options.text_field, pa.string()), (options.id_field, id_type)]),
                    unexpected_field_behavior="ignore",
                ),
            )
            break
        except pa.ArrowInvalid:
            continue
    if table is None or len(table) != len(rows):
        return None, 0
    text = table.column(options.text_field).combine_chunks()
    if text.null_count or pc.max(pc.utf8_length(text)).as_py() > options.max_text_chars:
        return None, 0
    if any(not t or t.isspace() for t in text.to_pylist()):  # ProX: `not text.strip()` is a no_text error
        return None, 0
    row = pa.array(rows + first_row, pa.int64())
    ids = table.column(options.id_field).cast(pa.string())
    if ids.null_count:
        default = pc.binary_join_element_wise(file.source, row.cast(pa.string()), ":")
        ids = pc.coalesce(ids, default)
    n = len(rows)
    # pa.array(list of str, pa.string()) converts at a few MB/s; constant columns are built without it.
    source, empty = pa.repeat(pa.scalar(file.source, pa.string()), n), pa.repeat(pa.scalar("", pa.string()), n)
    return pa.table([ids, text, source, row, pa.nulls(n, pa.string()), empty, empty], schema=ROWS_SCHEMA), len(starts)
