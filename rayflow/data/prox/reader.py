"""Input side of the refinement job: list a corpus, read one file as rows, turn bad rows into error records.

Inputs are JSONL (optionally gzip/zstd/bz2-compressed, detected from the extension) or Parquet, at a local path
or any pyarrow filesystem URI (`s3://`, `gs://`, `hdfs://`, `file://`), one file or a directory read
recursively. JSONL is read line by line here, not by Ray's JSON reader, so one malformed line becomes one
error record instead of failing its block. Every input row is identified by `(source, row)`: the file's path
relative to the input root and the 0-based line (JSONL) or row (Parquet) index. Blank JSONL lines are not rows.

Plain Python and pyarrow; no Ray.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ERROR_PREVIEW_CHARS = 300
_JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".jsonl.bz2")
_PARQUET_SUFFIXES = (".parquet",)
_READ_BLOCK = 1 << 20


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


def list_inputs(uri: str) -> list[InputFile]:
    """Every JSONL/Parquet file under `uri`, sorted by source. Raises FileNotFoundError naming `uri`."""
    fs, root = filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri!r} does not exist")
    if info.type == pafs.FileType.File:
        infos, base = [info], posixpath.dirname(root)
    else:
        infos, base = fs.get_file_info(pafs.FileSelector(root, recursive=True)), root
    files = []
    for item in infos:
        name = item.base_name
        if item.type != pafs.FileType.File or name.startswith((".", "_")):
            continue
        fmt = (
            "parquet"
            if name.endswith(_PARQUET_SUFFIXES)
            else "jsonl"
            if name.endswith(_JSONL_SUFFIXES)
            else None
        )
        if fmt:
            files.append(InputFile(item.path, posixpath.relpath(item.path, base), fmt))
    if not files:
        raise FileNotFoundError(f"input {uri!r} holds no .jsonl[.gz] or .parquet files")
    return sorted(files, key=lambda f: f.source)


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
    with fs.open_input_stream(file.path, compression="detect") as stream:
        for row, line, length in _lines(stream, options.max_line_bytes):
            if line is None:
                preview = ""
                yield _error(
                    file,
                    row,
                    "line_too_long",
                    f"line {row + 1} has {length} bytes, over max_line_bytes",
                    preview,
                )
                continue
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
                yield _error(
                    file,
                    row,
                    "invalid_json",
                    f"line {row + 1}: invalid JSON: {err.msg} at column {err.colno}",
                    decoded,
                )
                continue
            if not isinstance(obj, dict):
                yield _error(
                    file,
                    row,
                    "not_object",
                    f"line {row + 1}: expected a JSON object, got {type(obj).__name__}",
                    decoded,
                )
                continue
            yield _document(file, row, obj, options, decoded)


def _lines(stream, max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """`(index, line, length)` per `\\n`-separated line; `line` is None when longer than `max_bytes` (not kept)."""
    pending, pending_len, too_long, row = [], 0, False, 0
    while True:
        block = stream.read(_READ_BLOCK)
        if not block:
            break
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
    extra = {k: v for k, v in obj.items() if k not in (options.text_field, options.id_field)}
    return {
        "id": str(doc_id) if doc_id is not None else f"{file.source}:{row}",
        "text": text,
        "source": file.source,
        "row": row,
        "error": None,
        "reason": "",
        "raw": "",
        # The input's other fields travel as one JSON string, so every block has the same Arrow schema.
        "extra": json.dumps(extra, ensure_ascii=False, default=str),
    }
