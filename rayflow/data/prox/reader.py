"""Input side of the refinement job: list a corpus, read one file as rows, turn bad rows into error records.

Inputs are JSONL (`.jsonl`, `.json`, `.ndjson`; optionally gzip/zstd/bz2-compressed, detected from the
extension) or Parquet, at a local path or any pyarrow filesystem URI (`s3://`, `gs://`, `hdfs://`, `file://`),
one file or a directory read recursively. Files of other suffixes are skipped and listed in one warning, or read
as JSONL when asked (`other_files="jsonl"`). JSONL is read line by line here, not by Ray's JSON reader, so one
malformed line becomes one error record instead of failing its block; a UTF-8 byte-order mark is skipped. Every
input row is identified by `(source, row)`: the file's path relative to the input root and the 0-based line
(JSONL) or row (Parquet) index. Blank JSONL lines are not rows.

Plain Python and pyarrow; no Ray.
"""

from __future__ import annotations

import bz2
import codecs
import json
import logging
import posixpath
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

ERROR_PREVIEW_CHARS = 300
# The rows `read_rows` yields, good ones and error records alike, as the ProX stages and other readers take them.
READ_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("error", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("extra", pa.string()),
    ]
)
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_COMPRESSED_SUFFIXES = (".gz", ".zst", ".bz2")
_PARQUET_SUFFIXES = (".parquet",)
_READ_BLOCK = 1 << 20
# Compressed input is decoded in small pieces: a piece may inflate ~1000-fold, and a corrupt one loses the text
# it holds before the damage.
_DECODE_PIECE = 8 << 10
OtherFiles = Literal["skip", "jsonl"]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """`(filesystem, path)` for a local path (relative ones resolved) or a filesystem URI."""
    if "://" not in uri:
        uri = str(Path(uri).expanduser().resolve())
    return pafs.FileSystem.from_uri(uri)


@dataclass(frozen=True)
class InputFile:
    path: str  # on `filesystem(uri)`'s filesystem
    source: str  # relative to the input root: the stable name used in outputs and error records
    format: str  # "jsonl" or "parquet"


def scan_inputs(uri: str, other_files: OtherFiles = "skip") -> tuple[list[InputFile], list[str]]:
    """`(files, skipped)`: every JSONL/Parquet file under `uri` sorted by source, and the sources of files of
    other suffixes (read as JSONL instead when `other_files="jsonl"`). Names starting with `.` or `_` (`.tmp-*`,
    `_SUCCESS`) are neither. Raises FileNotFoundError naming `uri` when it is missing or holds no file to read."""
    fs, root = filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri!r} does not exist")
    if info.type == pafs.FileType.File:
        infos, base = [info], posixpath.dirname(root)
    else:
        infos, base = fs.get_file_info(pafs.FileSelector(root, recursive=True)), root
    files, skipped = [], []
    for item in infos:
        name = item.base_name
        if item.type != pafs.FileType.File or name.startswith((".", "_")):
            continue
        source = posixpath.relpath(item.path, base)
        fmt = _format(name) or ("jsonl" if other_files == "jsonl" else None)
        if fmt:
            files.append(InputFile(item.path, source, fmt))
        else:
            skipped.append(source)
    if not files:
        hint = (
            f" (skipped: {', '.join(sorted(skipped)[:5])}; other_files=jsonl reads them)" if skipped else ""
        )
        raise FileNotFoundError(
            f"input {uri!r} holds no .jsonl/.json/.ndjson[.gz|.zst|.bz2] or .parquet files{hint}"
        )
    return sorted(files, key=lambda f: f.source), sorted(skipped)


def list_inputs(uri: str, other_files: OtherFiles = "skip") -> list[InputFile]:
    """`scan_inputs`'s files; the skipped ones are named in one warning."""
    files, skipped = scan_inputs(uri, other_files)
    if skipped:
        shown = ", ".join(skipped[:20]) + (f" and {len(skipped) - 20} more" if len(skipped) > 20 else "")
        log.warning(
            "input %s: skipped %d file(s) of unknown suffix (not JSONL or Parquet; other_files=jsonl reads "
            "them as JSONL): %s",
            uri,
            len(skipped),
            shown,
        )
    return files


def _format(name: str) -> str | None:
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    for suffix in _COMPRESSED_SUFFIXES:
        name = name.removesuffix(suffix)
    return "jsonl" if name.endswith(_JSONL_SUFFIXES) else None


@dataclass(frozen=True)
class ReadOptions:
    text_field: str = "text"
    id_field: str = "id"
    max_line_bytes: int = 8 << 20
    max_text_chars: int = 2_000_000
    rows_per_batch: int = 256


def read_rows(fs: pafs.FileSystem, file: InputFile, options: ReadOptions, skip: frozenset[int] = frozenset()):
    """Yield lists of row dicts, `rows_per_batch` at a time, skipping rows in `skip` (done in an earlier run).

    Every row has `id, text, source, row, error, reason, raw, extra`: a good row has `error` None and `extra`
    (its other fields as JSON); a bad one has `error` (a short kind), `reason` (a message naming the line or
    row and the problem) and `raw` (a preview of the input). A file that cannot be read to its end (a truncated
    gzip stream, a corrupt Parquet page) ends with one `unreadable` error record after the rows read before
    the damage; its row number is the next one, so a rerun fails at the same place and skips it.
    """
    rows = _jsonl_rows(fs, file, options) if file.format == "jsonl" else _parquet_rows(fs, file, options)
    batch = []
    last = -1
    try:
        for row in rows:
            last = row["row"]
            if last in skip:
                continue
            batch.append(row)
            if len(batch) >= options.rows_per_batch:
                yield batch
                batch = []
    except (OSError, EOFError, ValueError, pa.ArrowException) as err:
        if last + 1 not in skip:
            reason = f"{file.source}: unreadable after row {last}: {type(err).__name__}: {err}"
            batch.append(_error(file, last + 1, "unreadable", reason[:ERROR_PREVIEW_CHARS], ""))
    if batch:
        yield batch


def _error(file: InputFile, row: int, kind: str, reason: str, raw: str) -> dict:
    return {
        "id": None,
        "text": "",
        "source": file.source,
        "row": row,
        "error": kind,
        "reason": reason,
        "raw": raw[:ERROR_PREVIEW_CHARS],
        "extra": "{}",
    }


def _jsonl_rows(fs: pafs.FileSystem, file: InputFile, options: ReadOptions) -> Iterator[dict]:
    for row, line, length in _lines(_blocks(fs, file.path), options.max_line_bytes):
        if line is None:
            reason = f"line {row + 1} has {length} bytes, over max_line_bytes"
            yield _error(file, row, "line_too_long", reason, "")
            continue
        if row == 0 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        if not line.strip():
            continue
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError as err:
            preview = line.decode("utf-8", errors="replace")
            yield _error(file, row, "not_utf8", f"line {row + 1}: not UTF-8 at byte {err.start}", preview)
            continue
        try:
            obj = json.loads(decoded)
        except json.JSONDecodeError as err:
            reason = f"line {row + 1}: invalid JSON: {err.msg} at column {err.colno}"
            yield _error(file, row, "invalid_json", reason, decoded)
            continue
        except (ValueError, RecursionError) as err:  # an integer of over 4300 digits; nesting too deep
            yield _error(file, row, "invalid_json", f"line {row + 1}: unreadable JSON: {err}", decoded)
            continue
        if not isinstance(obj, dict):
            reason = f"line {row + 1}: expected a JSON object, got {type(obj).__name__}"
            yield _error(file, row, "not_object", reason, decoded)
            continue
        yield _document(file, row, obj, options, decoded)


def _blocks(fs: pafs.FileSystem, path: str) -> Iterator[bytes]:
    """The file's bytes block by block, decompressed by its suffix (`.gz`, `.bz2`, `.zst`).

    A damaged compressed stream yields the bytes decodable before the damage, then raises OSError or EOFError.
    gzip and bz2 are decoded here, in 8 KiB pieces of compressed input: a truncated stream keeps every decodable
    byte (pyarrow's decoder drops what it holds at the damage), a corrupt one loses at most its damaged piece
    (bz2: its damaged 900 kB block). zstd goes through pyarrow, which may drop up to ~64 KiB before the damage.
    """
    with fs.open_input_stream(path, compression=None) as raw:  # decoded here, not by pyarrow
        if path.endswith(".zst"):
            stream = pa.CompressedInputStream(raw, "zstd")
            yield from iter(lambda: stream.read(64 << 10), b"")
            return
        if not path.endswith((".gz", ".bz2")):
            yield from iter(lambda: raw.read(_READ_BLOCK), b"")
            return
        new = (
            (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)) if path.endswith(".gz") else bz2.BZ2Decompressor
        )
        decoder, fed = new(), False
        for block in iter(lambda: raw.read(_READ_BLOCK), b""):
            for at in range(0, len(block), _DECODE_PIECE):
                piece = block[at : at + _DECODE_PIECE]
                while piece:
                    if decoder.eof:  # concatenated streams (`cat a.gz b.gz`): the next one starts here
                        decoder = new()
                    try:
                        out = decoder.decompress(piece)
                    except (zlib.error, OSError) as err:
                        raise OSError(f"corrupt compressed data: {err}") from None
                    fed = True
                    if out:
                        yield out
                    piece = decoder.unused_data if decoder.eof else b""
        if fed and not decoder.eof:
            raise EOFError("compressed stream ends early (truncated file)")


def _lines(blocks: Iterator[bytes], max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """`(index, line, length)` per `\\n`-separated line; `line` is None when longer than `max_bytes` (not kept).

    An error from `blocks` propagates, and the line it cut short is not yielded.
    """
    pending, pending_len, too_long, row = [], 0, False, 0
    for block in blocks:
        start = 0
        while True:
            end = block.find(b"\n", start)
            piece = block[start:] if end < 0 else block[start:end]
            pending_len += len(piece)
            if pending_len > max_bytes:
                too_long, pending = True, []
            elif not too_long:
                pending.append(piece)
            if end < 0:
                break
            yield row, None if too_long else b"".join(pending), pending_len
            row, pending, pending_len, too_long = row + 1, [], 0, False
            start = end + 1
    if pending_len or too_long:
        yield row, None if too_long else b"".join(pending), pending_len


def _parquet_rows(fs: pafs.FileSystem, file: InputFile, options: ReadOptions) -> Iterator[dict]:
    with fs.open_input_file(file.path) as handle:
        row = 0
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=options.rows_per_batch):
            for obj in batch.to_pylist():
                yield _document(file, row, obj, options, None)
                row += 1


def _document(file: InputFile, row: int, obj: dict, options: ReadOptions, raw: str | None) -> dict:
    text = obj.get(options.text_field)
    preview = (
        raw if raw is not None else json.dumps(obj, default=str, ensure_ascii=False)[:ERROR_PREVIEW_CHARS]
    )
    if text is None:
        return _error(file, row, "no_text", f"row {row}: missing field {options.text_field!r}", preview)
    if not isinstance(text, str):
        kind = type(text).__name__
        return _error(
            file,
            row,
            "no_text",
            f"row {row}: field {options.text_field!r} is a {kind}, not a string",
            preview,
        )
    if not text.strip():
        return _error(file, row, "no_text", f"row {row}: field {options.text_field!r} is empty", preview)
    if len(text) > options.max_text_chars:
        return _error(
            file, row, "text_too_long", f"row {row}: text has {len(text)} chars, over max_text_chars", preview
        )
    doc_id = obj.get(options.id_field)
    doc_id = str(doc_id) if doc_id is not None else f"{file.source}:{row}"
    for field, value in ((options.text_field, text), (options.id_field, doc_id)):
        if (at := _lone_surrogate(value)) is not None:
            reason = f"row {row}: field {field!r} is not valid Unicode (a lone surrogate at character {at})"
            return _error(file, row, "invalid_unicode", reason, preview)
    try:
        extra = extra_json({k: v for k, v in obj.items() if k not in (options.text_field, options.id_field)})
    except (ValueError, RecursionError) as err:  # nested one level too deep to write back
        return _error(
            file, row, "invalid_json", f"row {row}: fields cannot be written as JSON: {err}", preview
        )
    return {
        "id": doc_id,
        "text": text,
        "source": file.source,
        "row": row,
        "error": None,
        "reason": "",
        "raw": "",
        "extra": extra,
    }


def extra_json(fields: dict) -> str:
    """The input's other fields as one JSON object, the text of the output's `input_fields` column.

    Any JSON value is kept as it was read, whatever its type (integers of any size included), so every block
    has the same Arrow schema. Non-ASCII text is written as itself, unless the fields hold a lone surrogate
    (`"\\ud800"` in the input): then every non-ASCII character is `\\u`-escaped, which keeps the value and is
    valid UTF-8. Values JSON lacks (Parquet timestamps, decimals, bytes) are written as their Python text.
    """
    text = json.dumps(fields, ensure_ascii=False, default=str)
    return text if _lone_surrogate(text) is None else json.dumps(fields, default=str)


def _lone_surrogate(text: str) -> int | None:
    """The index of the first character UTF-8 cannot encode (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None
