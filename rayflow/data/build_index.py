"""Index building over Ray Data: documents -> chunks -> embeddings (actor pool) -> Parquet parts -> faiss + BM25.

    read (tasks)         one task per input file (ProX's reader): JSONL or Parquet, bad rows -> error rows
    embed (actors)       `EmbedChunks` on the one engine stage: chunk each document, embed a batch's chunks in
                         one call (GPUs when the stage has them); one row per document in and out
    write                each block committed atomically as data/ (one row per chunk) and errors/ parts
    index (driver)       per shard: its chunks and vectors from the parts, dense + sparse index, then manifest

The parts are ProX's output machinery (`rayflow.data.prox.output.Output`): a rerun on the same `output_dir`
skips the documents already committed, so a killed job completes with every input row exactly once (a document's
chunks live in one part). The index phase reads the parts shard by shard, so the driver holds one shard's
vectors at a time; BM25 uses the whole corpus's term statistics in every shard (`rayflow.retrieval.sparse`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from pydantic import Field
from ray.data import Datasink

from rayflow.config import Config, dump_config
from rayflow.data.engine_stage import StageConfig, engine_map
from rayflow.data.prox.output import DATA, ERRORS, Output, OutputMismatchError, error_table, steady_rate
from rayflow.data.prox.reader import READ_SCHEMA, InputFile, ReadOptions, filesystem, list_inputs, read_rows
from rayflow.retrieval import (
    Chunk,
    Document,
    Embedder,
    IndexConfig,
    IndexShard,
    TermStats,
    chunk_document,
    shard_of,
    tokenize,
)
from rayflow.retrieval.retriever import shard_dir, write_manifest
from rayflow.retrieval.shard import CHUNK_SCHEMA
from rayflow.workflow import InputError, Result, Workflow, require_model

log = logging.getLogger(__name__)
INDEX_DIR = "index"


class BuildIndexConfig(Config):
    """Index building: documents (text + metadata) in; chunk/embedding Parquet parts and a sharded index out."""

    input: str = Field("examples/papers/papers.jsonl", description="JSONL(.gz)/Parquet file or directory")
    output_dir: str = Field(
        "outputs/build_index", description="data/, errors/, index/, summary.json, run.json"
    )
    overwrite: bool = Field(False, description="clear output_dir's parts first instead of resuming")
    text_field: str = Field("text", description="input field holding the document text")
    id_field: str = Field("doc_id", description="input id field; missing ids become <file>:<row>")
    metadata_field: str = Field(
        "metadata", description="input object field merged into metadata (other fields are metadata too)"
    )
    index: IndexConfig = IndexConfig()
    num_shards: int = Field(1, ge=1, description="index shards (documents split by a hash of their id)")
    stage: StageConfig = Field(
        StageConfig(actors=1, cpus_per_actor=1.0, batch_size=32),
        description="the embedding actor pool (batch_size: documents per call)",
    )
    read_cpus: float = Field(0.25, gt=0, description="CPUs per read and write task")
    rows_per_block: int = Field(64, ge=1, description="documents per read batch")
    block_bytes: int | None = Field(
        None, ge=1 << 12, description="target block size, the unit committed (a kill loses at most one); None = Ray's"
    )
    max_line_bytes: int = Field(8 << 20, ge=1, description="longer JSONL lines become error records")
    max_text_chars: int = Field(2_000_000, ge=1, description="longer documents become error records")


def fingerprint(cfg: BuildIndexConfig) -> dict[str, Any]:
    """Settings that change the parts (the index settings do not: the index is rebuilt from them)."""
    data = dump_config(cfg)
    keys = ("input", "text_field", "id_field", "metadata_field", "max_line_bytes", "max_text_chars")
    return {
        **{k: data[k] for k in keys},
        "chunk": data["index"]["chunk"],
        "embedder_model": cfg.index.embedder.model,
        "max_seq_length": cfg.index.embedder.max_seq_length,
    }


_CHUNK_STRUCT = pa.struct(
    [
        (name, CHUNK_SCHEMA.field(name).type)
        for name in ("chunk_id", "text", "start", "end", "token_start", "token_end")
    ]
    + [("embedding", pa.list_(pa.float32()))]
)
EMBED_SCHEMA = pa.schema(list(READ_SCHEMA) + [("metadata", pa.string()), ("chunks", pa.list_(_CHUNK_STRUCT))])


class EmbedChunks:
    """Engine-stage task: chunk every document of the batch and embed all its chunks in one call.

    It needs no `rayflow.llm` engine (`engine = None`): the sentence-transformers embedder is not a language
    model, so the task loads it itself, once per actor, on its first batch. A row whose metadata is not an
    object, or whose text has no tokens, becomes an error record.
    """

    engine = None
    schema = EMBED_SCHEMA

    def __init__(self, index: IndexConfig, metadata_field: str):
        self.index, self.metadata_field = index, metadata_field
        self._embedder: Embedder | None = None

    def __call__(self, rows: list[dict], engine=None) -> None:
        docs: list[tuple[dict, list[Chunk]]] = []
        for row in rows:
            row.setdefault("metadata", "{}")
            row["chunks"] = []
            if row["error"] is not None:
                continue
            extra = json.loads(row["extra"])
            nested = extra.pop(self.metadata_field, {})
            if not isinstance(nested, dict):
                _fail(
                    row, "bad_metadata", f"{self.metadata_field} is a {type(nested).__name__}, not an object"
                )
                continue
            metadata = {**extra, **nested}
            chunks = chunk_document(
                Document(doc_id=row["id"], text=row["text"], metadata=metadata), self.index.chunk
            )
            if not chunks:
                _fail(row, "no_text", "the text has no tokens to index")
                continue
            row["metadata"] = json.dumps(metadata, sort_keys=True, default=str)
            docs.append((row, chunks))
        if not docs:
            return
        if self._embedder is None:
            self._embedder = Embedder(self.index.embedder)
        vectors = iter(self._embedder.encode([c.search_text for _, chunks in docs for c in chunks]))
        for row, chunks in docs:
            row["chunks"] = [
                {
                    "chunk_id": c.chunk_id,
                    "text": c.text,
                    "start": c.start,
                    "end": c.end,
                    "token_start": c.token_start,
                    "token_end": c.token_end,
                    "embedding": next(vectors).tolist(),
                }
                for c in chunks
            ]


def _fail(row: dict, kind: str, reason: str) -> None:
    row["error"], row["reason"] = kind, f"{row['source']} row {row['row']} ({row['id']}): {reason}"
    row["raw"] = row["text"][:300]


class ChunkOutput(Output):
    """ProX's committed parts with one data row per chunk: `CHUNK_SCHEMA` + source, row, embedding."""

    def parts(self, kind: str) -> list[str]:
        # A write killed mid-way leaves a `.tmp-*` file behind: never a committed part.
        return [p for p in super().parts(kind) if not p.rsplit("/", 1)[-1].startswith(".")]

    def done_rows(self) -> dict[str, set[int]]:
        done: dict[str, set[int]] = {}
        for kind in (DATA, ERRORS):
            for path in self.parts(kind):
                table = self._read(path, ["source", "row"])
                for source, row in zip(table.column("source").to_pylist(), table.column("row").to_pylist()):
                    done.setdefault(source, set()).add(row)
        return done

    def write_rows(self, rows: list[dict]) -> tuple[int, int]:
        good = [r for r in rows if r["error"] is None]
        bad = [r for r in rows if r["error"] is not None]
        if good:
            self._commit(DATA, good, chunk_rows_table(good))
        if bad:
            self._commit(ERRORS, bad, error_table(bad))
        return len(good), len(bad)


def chunk_rows_table(rows: list[dict]) -> pa.Table:
    """One row per chunk of the given document rows, embeddings as fixed-size float32 lists."""
    flat = [
        {
            **{k: c[k] for k in _CHUNK_STRUCT.names if k != "embedding"},
            "doc_id": r["id"],
            "metadata": r["metadata"],
            "source": r["source"],
            "row": int(r["row"]),
        }
        for r in rows
        for c in r["chunks"]
    ]
    vectors = np.asarray([c["embedding"] for r in rows for c in r["chunks"]], np.float32)
    table = pa.Table.from_pylist(
        flat, schema=pa.schema(list(CHUNK_SCHEMA) + [("source", pa.string()), ("row", pa.int64())])
    )
    dim = vectors.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
    return table.append_column("embedding", embedding)


class _PartsDatasink(Datasink):
    def __init__(self, output_uri: str):
        self.output_uri = output_uri

    def write(self, blocks, ctx) -> tuple[int, int]:
        output = ChunkOutput(self.output_uri)
        good = bad = 0
        for block in blocks:
            rows = block.to_pylist() if isinstance(block, pa.Table) else block.to_dict("records")
            if rows:
                g, b = output.write_rows(rows)
                good, bad = good + g, bad + b
        return good, bad


def _read_file(batch: pa.Table, fs, options: ReadOptions):
    """Ray Data UDF: one input file per call, yielding row batches."""
    for item in batch.to_pylist():
        file = InputFile(item["path"], item["source"], item["format"])
        for rows in read_rows(fs, file, options, frozenset(item["skip"])):
            yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)


def check(cfg: BuildIndexConfig) -> None:
    """Input, embedder and output directory, before Ray starts or a model loads."""
    try:
        list_inputs(cfg.input)
    except FileNotFoundError as err:
        raise InputError(str(err)) from None
    require_model(cfg.index.embedder.model, "index.embedder.model")
    try:
        ChunkOutput(cfg.output_dir).check(fingerprint(cfg), cfg.overwrite)
    except OutputMismatchError as err:
        raise InputError(f"output_dir: {err}") from None
    if not ChunkOutput(cfg.output_dir).is_local:
        raise InputError("output_dir: the index phase writes local files; give a local or shared-disk path")


def run(cfg: BuildIndexConfig) -> Result:
    """Run (or resume) the job on the current Ray cluster: parts under data/ and errors/, the index under
    index/ (manifest.json + shard-NNNNN/), summary.json and run.json in `cfg.output_dir`."""
    check(cfg)
    output = ChunkOutput(cfg.output_dir)
    with Workflow("build_index", cfg, output.root) as wf:
        with wf.phase("embed"):
            this_run = _embed(cfg, output)
        with wf.phase("index"):
            manifest = build_shards(cfg, output)
        errors = _error_counts(output)
        summary = {
            "documents_in": manifest["documents"] + sum(errors.values()),
            "documents_indexed": manifest["documents"],
            "errors": sum(errors.values()),
            "errors_by_kind": errors,
            "chunks": manifest["chunks"],
            "chunks_per_shard": manifest["chunks_per_shard"],
            "dimension": manifest["dimension"],
            "index_dir": str(output.root) + f"/{INDEX_DIR}",
            "this_run": this_run,
        }
        return wf.finish(
            summary,
            f"indexed {summary['chunks']} chunks of {summary['documents_indexed']} documents "
            f"({summary['errors']} errors) in {cfg.num_shards} shard(s) -> {summary['index_dir']}",
        )


def _embed(cfg: BuildIndexConfig, output: ChunkOutput) -> dict[str, Any]:
    files = list_inputs(cfg.input)
    fs, _ = filesystem(cfg.input)
    output.prepare(fingerprint(cfg), cfg.overwrite)
    done = output.done_rows()
    resumed = sum(len(rows) for rows in done.values())
    log.info("embedding %s (%d files, %d documents already committed)", cfg.input, len(files), resumed)
    started = time.perf_counter()
    items = [
        {"path": f.path, "source": f.source, "format": f.format, "skip": sorted(done.get(f.source, ()))}
        for f in files
    ]
    options = ReadOptions(
        cfg.text_field, cfg.id_field, cfg.max_line_bytes, cfg.max_text_chars, cfg.rows_per_block
    )
    # A part is one Ray block of embedded documents (`block_bytes`; Ray's default target otherwise): the most a
    # kill loses. The target is read when the dataset is created.
    context = ray.data.DataContext.get_current()
    default_block_bytes = context.target_max_block_size
    context.target_max_block_size = cfg.block_bytes or default_block_bytes
    try:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
    finally:
        context.target_max_block_size = default_block_bytes
    ds = ds.map_batches(
        _read_file, batch_size=1, batch_format="pyarrow", fn_kwargs={"fs": fs, "options": options},
        num_cpus=cfg.read_cpus,
    )  # fmt: skip
    ds = engine_map(ds, [EmbedChunks(cfg.index, cfg.metadata_field)], cfg.stage)
    ds.write_datasink(_PartsDatasink(cfg.output_dir), ray_remote_args={"num_cpus": cfg.read_cpus})
    wall = time.perf_counter() - started
    processed = sum(len(rows) for rows in output.done_rows().values()) - resumed
    report = {"documents": processed, "resumed_from": resumed, "wall_s": round(wall, 3)}
    try:
        report["steady_chunks_per_s"] = round(steady_rate(output)["value"], 3)
    except ValueError:  # fewer than two parts: no steady state to measure
        report["steady_chunks_per_s"] = None
    return report


def _parts(output: ChunkOutput, columns: list[str]):
    for path in output.parts(DATA):
        yield output._read(path, columns)


def build_shards(cfg: BuildIndexConfig, output: ChunkOutput) -> dict[str, Any]:
    """Build `cfg.num_shards` shards from the committed parts into `output_dir/index/`; returns the manifest.

    Pass 1 counts BM25's corpus statistics over every chunk; then each shard reads only its own rows.
    """
    stats, documents, dim = TermStats(), set(), None
    for table in _parts(output, ["doc_id", "text", "metadata", "embedding"]):
        titles = [json.loads(m).get("title") for m in table.column("metadata").to_pylist()]
        texts = table.column("text").to_pylist()
        stats.update([tokenize(f"{t}\n{x}" if t else x) for t, x in zip(titles, texts)])
        documents.update(table.column("doc_id").to_pylist())
        dim = table.schema.field("embedding").type.list_size
    if dim is None:
        raise InputError(
            f"input: {cfg.input!r} produced no indexable documents (see {cfg.output_dir}/errors)"
        )
    root = output.root + f"/{INDEX_DIR}"
    counts = []
    for s in range(cfg.num_shards):
        chunks, vectors = [], []
        for table in _parts(output, CHUNK_SCHEMA.names + ["embedding"]):
            mine = [
                i
                for i, d in enumerate(table.column("doc_id").to_pylist())
                if shard_of(d, cfg.num_shards) == s
            ]
            if not mine:
                continue
            part = table.take(mine)
            vectors.append(part.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim))
            chunks += [
                Chunk(**{**r, "metadata": json.loads(r["metadata"])})
                for r in part.select(CHUNK_SCHEMA.names).to_pylist()
            ]
        order = sorted(range(len(chunks)), key=lambda i: (chunks[i].doc_id, chunks[i].token_start))
        shard = IndexShard(dim, cfg.index.dense, cfg.index.sparse)
        matrix = np.concatenate(vectors)[order] if vectors else np.zeros((0, dim), np.float32)
        shard.add([chunks[i] for i in order], matrix, stats=stats)
        shard.save(f"{root}/{shard_dir(s)}")
        counts.append(len(shard))
        log.info("shard %d/%d: %d chunks", s + 1, cfg.num_shards, len(shard))
    fp = fingerprint(cfg)
    return write_manifest(
        Path(root),
        cfg.index,
        dim,
        counts,
        documents=len(documents),
        fingerprint=hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16],
        parts_config=fp,
    )


def _error_counts(output: ChunkOutput) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in output.parts(ERRORS):
        for kind in output._read(path, ["error"]).column("error").to_pylist():
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
