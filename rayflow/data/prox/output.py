"""Output side of the refinement job: committed Parquet parts, the resume scan, and the statistics of summary.json.

Layout under `output_dir` (a local path or any pyarrow filesystem URI):

    data/part-<key>.parquet     refined rows: id, text, raw_content, doc_program, chunk_program, kept,
                                n_error_ops, drop_reason, input_fields (the input's other fields, one JSON
                                object as text), and `prox` (bookkeeping)
    errors/part-<key>.parquet   error records: source, row, id, error (kind), reason, raw (preview)
    _prox_job.json              what produced the parts (config fingerprint); a rerun must match it
    summary.json, run.json

Every data part has the same schema whatever the input holds: parts are written independently, and Parquet
readers take one part's schema for all (pyarrow drops columns the first part lacks and casts conflicting types),
so the input's other fields are one JSON text column rather than a column each.

Exactly once: each part is written to a temporary name (`.tmp-*`) and renamed into place, so a committed part
(`part-*`) is complete; its name is a hash of the `(source, row)` keys it holds, so a retried write replaces
rather than duplicates. A rerun removes the temporary files a kill left, reads the keys of committed parts and
skips those rows: no row is lost or written twice. A row that cannot be written is committed as an error record.

Plain pyarrow; no Ray.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayflow.data.prox.reader import filesystem

DATA, ERRORS, JOB_FILE = "data", "errors", "_prox_job.json"
PART_PREFIX, TMP_PREFIX = "part-", ".tmp-"
OUTPUT_COLUMNS = (
    "id",
    "text",
    "raw_content",
    "doc_program",
    "chunk_program",
    "kept",
    "n_error_ops",
    "drop_reason",
    "input_fields",
)
PROX_FIELDS = {
    "source": pa.string(),
    "row": pa.int64(),
    "words_in": pa.int64(),
    "words_out": pa.int64(),
    "tokens_in": pa.int64(),
    "tokens_out": pa.int64(),
    "n_chunks": pa.int64(),
    "n_calls": pa.int64(),
    "n_unknown_calls": pa.int64(),
    "fallback": pa.bool_(),
    "doc_n_error_ops": pa.int64(),
    "doc_parse_failed": pa.bool_(),
    "chunk_parse_failed": pa.bool_(),
    "doc_truncated": pa.bool_(),
    "chunk_truncated": pa.bool_(),
    "doc_prompt_tokens": pa.int64(),
    "chunk_prompt_tokens": pa.int64(),
    "doc_s": pa.float64(),
    "chunk_s": pa.float64(),
    "doc_semantics_differs": pa.bool_(),
    "chunk_semantics_differs": pa.bool_(),
}
ERROR_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("error", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)


class OutputMismatchError(ValueError):
    """The output directory holds parts of a job with different settings."""


class Output:
    """An output directory on its filesystem."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = filesystem(uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def write_json(self, name: str, obj: Any) -> None:
        """Write `name` (e.g. summary.json) atomically on the output's filesystem."""
        self._write_bytes(self.path(name), (json.dumps(obj, indent=2, default=str) + "\n").encode())

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def parts(self, kind: str) -> list[str]:
        """The committed parts of `kind` (`data` or `errors`), sorted: never a temporary file."""
        return sorted(i.path for i in self._listing(kind) if i.base_name.startswith(PART_PREFIX))

    def _listing(self, kind: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path(kind), allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def check(self, fingerprint: dict, overwrite: bool) -> None:
        """Raise `OutputMismatchError` when the directory holds parts of a job with other settings, unless
        `overwrite` (which clears them) is set."""
        job = self.path(JOB_FILE)
        if overwrite or self.fs.get_file_info(job).type != pafs.FileType.File:
            return
        with self.fs.open_input_stream(job) as f:
            previous = json.loads(f.read())
        if previous != fingerprint:
            changed = sorted(
                k for k in fingerprint.keys() | previous.keys() if fingerprint.get(k) != previous.get(k)
            )
            raise OutputMismatchError(
                f"{self.uri} holds output of a different job (changed: {', '.join(changed)}); "
                "resume with the same config, or pass overwrite=true to start over"
            )

    def prepare(self, fingerprint: dict, overwrite: bool) -> None:
        """Create the layout; refuse to mix parts from a different job unless `overwrite` clears them."""
        self.check(fingerprint, overwrite)
        self.fs.create_dir(self.root, recursive=True)
        if overwrite:
            for kind in (DATA, ERRORS):
                self.fs.delete_dir_contents(self.path(kind), missing_dir_ok=True)
        for kind in (DATA, ERRORS):
            self.fs.create_dir(self.path(kind), recursive=True)
            # A write killed before its rename left a temporary file, complete or cut short: its rows are not
            # committed, so this run redoes them.
            for info in self._listing(kind):
                if info.base_name.startswith(TMP_PREFIX):
                    self.fs.delete_file(info.path)
        self._write_bytes(self.path(JOB_FILE), json.dumps(fingerprint, indent=2, sort_keys=True).encode())

    def _write_bytes(self, path: str, payload: bytes) -> None:
        tmp = posixpath.join(
            posixpath.dirname(path), f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(path)}"
        )
        with self.fs.open_output_stream(tmp) as f:
            f.write(payload)
        self.fs.move(tmp, path)

    def done_rows(self) -> dict[str, set[int]]:
        """`source -> rows` already committed, in data and errors parts."""
        done: dict[str, set[int]] = {}
        for path in self.parts(DATA):
            prox = self._read(path, ["prox"]).column("prox").combine_chunks()
            for source, row in zip(prox.field("source").to_pylist(), prox.field("row").to_pylist()):
                done.setdefault(source, set()).add(row)
        for path in self.parts(ERRORS):
            table = self._read(path, ["source", "row"])
            for source, row in zip(table.column("source").to_pylist(), table.column("row").to_pylist()):
                done.setdefault(source, set()).add(row)
        return done

    def _read(self, path: str, columns: list[str]) -> pa.Table:
        with self.fs.open_input_file(path) as f:
            return pq.read_table(f, columns=columns)

    def write_rows(self, rows: list[dict]) -> tuple[int, int]:
        """Commit one batch of stage rows as a data part and an errors part; returns (data rows, error rows).

        A row the data table cannot hold becomes an `unwritable` error record; the others are written.
        """
        good = [r for r in rows if r["error"] is None]
        bad = [r for r in rows if r["error"] is not None]
        if good:
            try:
                table = data_table(good)
            except _CONVERSION_ERRORS:
                good, unwritable = _split_unwritable(good)
                bad += unwritable
                table = data_table(good) if good else None
            if table is not None:
                self._commit(DATA, good, table)
        if bad:
            self._commit(ERRORS, bad, error_table(bad))
        return len(good), len(bad)

    def _commit(self, kind: str, rows: list[dict], table: pa.Table) -> None:
        keys = sorted(f"{r['source']}\x00{r['row']}" for r in rows)
        name = f"{PART_PREFIX}{hashlib.sha1(chr(10).join(keys).encode()).hexdigest()[:20]}.parquet"
        final = self.path(kind, name)
        tmp = self.path(kind, f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}")
        with self.fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        self.fs.move(tmp, final)


# What building an Arrow table raises for a value it cannot hold (a lone surrogate, a wrong type, an overflow).
_CONVERSION_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)


def _split_unwritable(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """`(writable, error records)`: each row tried alone in a data table (only after a batch failed)."""
    writable, failed = [], []
    for row in rows:
        try:
            data_table([row])
        except _CONVERSION_ERRORS as err:
            reason = f"row {row['row']}: cannot be written: {type(err).__name__}: {err}"
            failed.append(
                {**row, "error": "unwritable", "reason": reason[:300], "raw": str(row["text"])[:300]}
            )
        else:
            writable.append(row)
    return writable, failed


def steady_rate(output: Output) -> dict[str, float]:
    """Rows per second between the first and the last committed part (start-up excluded), from commit times.

    The rows of the first part are not counted: the clock starts when it lands.
    """
    parts = []
    for kind in (DATA, ERRORS):
        for info in output._listing(kind):
            if info.base_name.startswith(PART_PREFIX):
                with output.fs.open_input_file(info.path) as f:
                    parts.append((info.mtime.timestamp(), pq.ParquetFile(f).metadata.num_rows))
    parts.sort()
    if len(parts) < 2:
        raise ValueError("need at least two committed parts to measure a steady-state rate")
    seconds = parts[-1][0] - parts[0][0]
    rows = sum(n for _, n in parts[1:])
    return {"value": rows / seconds, "rows": rows, "seconds": round(seconds, 3), "parts": len(parts)}


def data_table(rows: list[dict]) -> pa.Table:
    """Output rows: the ProX columns (the input's other fields as JSON text last), then the `prox` struct."""
    columns: dict[str, Any] = {
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "text": pa.array([r["refined"] if r["kept"] else "" for r in rows], pa.string()),
        "raw_content": pa.array([r["text"] for r in rows], pa.string()),
        "doc_program": pa.array([r["doc_program"] for r in rows], pa.string()),
        "chunk_program": pa.array([r["chunk_program"] for r in rows], pa.string()),
        "kept": pa.array([bool(r["kept"]) for r in rows], pa.bool_()),
        "n_error_ops": pa.array([int(r["n_error_ops"]) for r in rows], pa.int64()),
        "drop_reason": pa.array([r["drop_reason"] or None for r in rows], pa.string()),
        "input_fields": pa.array([r["extra"] for r in rows], pa.string()),
    }
    prox = {k: pa.array([_scalar(r[k]) for r in rows], t) for k, t in PROX_FIELDS.items()}
    for key in ("tokens_in", "tokens_out"):
        prox[key] = pa.array([None if r[key] < 0 else int(r[key]) for r in rows], pa.int64())
    columns["prox"] = pa.StructArray.from_arrays(list(prox.values()), names=list(prox))
    return pa.table(columns)


def _scalar(value):
    return value.item() if hasattr(value, "item") else value


def error_table(rows: list[dict]) -> pa.Table:
    """Error records; their text is made valid UTF-8 (a lone surrogate becomes `?`) so that they always write."""
    return pa.Table.from_pylist(
        [
            {
                "source": _valid(r["source"]),
                "row": int(r["row"]),
                "id": _valid(r.get("id") or None),
                "error": r["error"],
                "reason": _valid(r["reason"]),
                "raw": _valid(r.get("raw") or ""),
            }
            for r in rows
        ],
        schema=ERROR_SCHEMA,
    )


def _valid(text: str | None) -> str | None:
    return None if text is None else text.encode("utf-8", "replace").decode("utf-8")


def compute_stats(output: Output) -> dict[str, Any]:
    """Corpus statistics over every committed part (so a resumed job reports the whole corpus).

    Retention is words (or tokens) out / in over every refined document, dropped ones included. Per stage,
    `*_per_actor_s` are documents or tokens per second of that stage's compute inside an actor (summed over
    actors, so the whole job runs about `actors` times faster); `this_run` (added by the pipeline) has wall time.
    Token counts are None when the generator has no tokenizer (rules without `tokenizer`).
    """
    n = Counter()
    drops: Counter = Counter()
    for path in output.parts(DATA):
        table = output._read(path, ["kept", "drop_reason", "n_error_ops", "prox"])
        prox = table.column("prox").combine_chunks()
        f = {name: prox.field(name).to_pylist() for name in PROX_FIELDS}
        kept = table.column("kept").to_pylist()
        n["refined"] += len(kept)
        n["kept"] += sum(kept)
        drops.update(r for r in table.column("drop_reason").to_pylist() if r)
        n["chunk_error_ops"] += sum(table.column("n_error_ops").to_pylist())
        for key in (
            "words_in",
            "words_out",
            "n_calls",
            "n_chunks",
            "doc_n_error_ops",
            "doc_prompt_tokens",
            "chunk_prompt_tokens",
        ):
            n[key] += sum(f[key])
        for key in (
            "fallback",
            "doc_parse_failed",
            "chunk_parse_failed",
            "doc_truncated",
            "chunk_truncated",
            "doc_semantics_differs",
            "chunk_semantics_differs",
        ):
            n[key] += sum(f[key])
        n["semantics_differs"] += sum(
            a or b for a, b in zip(f["doc_semantics_differs"], f["chunk_semantics_differs"])
        )
        n["doc_s"] += sum(f["doc_s"])
        n["chunk_s"] += sum(f["chunk_s"])
        n["chunk_programs"] += sum(r != "doc" for r in table.column("drop_reason").to_pylist())
        tokens = [(a, b) for a, b in zip(f["tokens_in"], f["tokens_out"]) if a is not None]
        reasons = table.column("drop_reason").to_pylist()
        n["chunk_stage_tokens"] += sum(
            a for a, r in zip(f["tokens_in"], reasons) if a is not None and r != "doc"
        )
        n["tokens_counted"] += len(tokens)
        n["tokens_in"] += sum(a for a, _ in tokens)
        n["tokens_out"] += sum(b for _, b in tokens)
    errors: Counter = Counter()
    for path in output.parts(ERRORS):
        errors.update(output._read(path, ["error"]).column("error").to_pylist())
    n_err = sum(errors.values())
    chunk_programs = n["chunk_programs"]
    return {
        "documents_in": n["refined"] + n_err,
        "documents_refined": n["refined"],
        "documents_kept": n["kept"],
        "kept_ratio": _ratio(n["kept"], n["refined"]),
        "drop_reasons": dict(sorted(drops.items())),
        "errors": n_err,
        "errors_by_kind": dict(sorted(errors.items())),
        "words_in": n["words_in"],
        "words_out": n["words_out"],
        "word_retention": _ratio(n["words_out"], n["words_in"]),
        "tokens_in": n["tokens_in"] if n["tokens_counted"] else None,
        "tokens_out": n["tokens_out"] if n["tokens_counted"] else None,
        "token_retention": _ratio(n["tokens_out"], n["tokens_in"]) if n["tokens_counted"] else None,
        "doc_stage": {
            "programs": n["refined"],
            "error_ops": n["doc_n_error_ops"],
            "parse_failures": n["doc_parse_failed"],
            "parse_failure_rate": _ratio(n["doc_parse_failed"], n["refined"]),
            "truncated_programs": n["doc_truncated"],
            "prompt_tokens": n["doc_prompt_tokens"],
            "docs_per_actor_s": _ratio(n["refined"], n["doc_s"]),
            "tokens_per_actor_s": _ratio(n["tokens_in"], n["doc_s"]) if n["tokens_counted"] else None,
            "prompt_tokens_per_actor_s": _ratio(n["doc_prompt_tokens"], n["doc_s"]),
        },
        "chunk_stage": {
            "programs": chunk_programs,
            "chunks": n["n_chunks"],
            "calls": n["n_calls"],
            "error_ops": n["chunk_error_ops"],
            "error_op_rate": _ratio(n["chunk_error_ops"], n["n_calls"] + n["chunk_error_ops"]),
            "parse_failures": n["chunk_parse_failed"],
            "parse_failure_rate": _ratio(n["chunk_parse_failed"], chunk_programs),
            "fallbacks": n["fallback"],
            "truncated_programs": n["chunk_truncated"],
            "prompt_tokens": n["chunk_prompt_tokens"],
            "docs_per_actor_s": _ratio(chunk_programs, n["chunk_s"]),
            "tokens_per_actor_s": _ratio(n["chunk_stage_tokens"], n["chunk_s"])
            if n["tokens_counted"]
            else None,
            "prompt_tokens_per_actor_s": _ratio(n["chunk_prompt_tokens"], n["chunk_s"]),
        },
        "semantics": {
            "documents_decided_differently": n["semantics_differs"],
            "doc_level": n["doc_semantics_differs"],
            "chunk_level": n["chunk_semantics_differs"],
            "definition": "refined documents the other executor semantics (strict <-> reference) decides "
            "differently: doc level a different keep/drop, chunk level a different output text",
        },
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 6) if b else None
