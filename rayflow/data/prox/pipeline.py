"""ProX refinement over Ray Data: files -> read -> doc stage -> chunk stage -> committed Parquet parts.

    read (tasks)       one task per input file, JSONL line by line or Parquet batches; bad rows -> error rows
    doc stage (actors) doc programs from the generator (lm: the engine stage's engine), executed: keep or drop
    chunk stage        chunk programs for kept documents, split and merged inside the task, executed
    write              each block committed atomically as data/ and errors/ parts (see `output`)

A rerun on the same `output_dir` skips the rows already committed, so a job killed mid-run (driver or worker)
completes on rerun with every input row exactly once. With the `rules` generator the rows are identical to an
uninterrupted run; with `lm` they are too under greedy decoding, up to the engine's batch invariance.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from pydantic import Field
from ray.data import Datasink

from rayflow.config import Config, dump_config
from rayflow.data.engine_stage import StageConfig, engine_map
from rayflow.data.prox.executor import ExecutorConfig
from rayflow.data.prox.generator import GeneratorName
from rayflow.data.prox.lm import LMConfig, LMGenerator
from rayflow.data.prox.output import Output, OutputMismatchError, compute_stats
from rayflow.data.prox.reader import (
    READ_SCHEMA,
    InputFile,
    OtherFiles,
    ReadOptions,
    filesystem,
    list_inputs,
    read_rows,
    scan_inputs,
)
from rayflow.data.prox.rules import RulesConfig, RulesGenerator
from rayflow.data.prox.stage import ChunkLevel, DocLevel
from rayflow.workflow import SUMMARY_FILE, InputError, Result, Workflow, require_model

log = logging.getLogger(__name__)


class ProxRefineConfig(Config):
    """ProX refinement job: a corpus in, refined Parquet + error records + statistics out."""

    input: str = Field(
        "examples/web_corpus.jsonl", description="JSONL(.gz)/Parquet file or directory, path or URI"
    )
    other_files: OtherFiles = Field(
        "skip",
        description="input files not named .jsonl/.json/.ndjson[.gz|.zst|.bz2] or .parquet: skip (listed in "
        "one warning) or jsonl (read them as JSONL)",
    )
    output_dir: str = Field(
        "outputs/prox", description="data/, errors/, summary.json, run.json (path or URI)"
    )
    overwrite: bool = Field(False, description="clear output_dir's parts first instead of resuming")
    text_field: str = Field("text", description="input field holding the document (RedPajama: raw_content)")
    id_field: str = Field("id", description="input id field; missing ids become <file>:<row>")
    generator: GeneratorName = Field(
        "rules", description="rules (heuristics, offline) or lm (refining models)"
    )
    rules: RulesConfig = RulesConfig()
    lm: LMConfig = LMConfig()
    executor: ExecutorConfig = ExecutorConfig()
    tokenizer: str | None = Field(
        None, description="rules: tokenizer for token statistics (None = not counted)"
    )
    stage: StageConfig = Field(
        StageConfig(), description="the doc (or fused) stage's actor pool; the chunk stage's but its actors"
    )
    fuse_stages: bool = Field(
        False, description="doc and chunk stage in one actor (one engine if models match)"
    )
    chunk_actors: int = Field(1, ge=1, description="chunk-stage actors when not fused")
    read_cpus: float = Field(0.25, gt=0, description="CPUs per read task")
    rows_per_block: int = Field(256, ge=1, description="rows per read batch")
    block_bytes: int = Field(
        1 << 20,
        ge=1 << 12,
        description="target block size: a block is the unit committed, so the most a kill loses",
    )
    max_line_bytes: int = Field(8 << 20, ge=1, description="longer JSONL lines become error records")
    max_text_chars: int = Field(2_000_000, ge=1, description="longer documents become error records")


# Settings that change what the output holds: a resumed run must use the same ones.
_FINGERPRINT_KEYS = (
    "input",
    "other_files",
    "text_field",
    "id_field",
    "generator",
    "rules",
    "lm",
    "executor",
    "tokenizer",
    "max_line_bytes",
    "max_text_chars",
)


def fingerprint(cfg: ProxRefineConfig) -> dict[str, Any]:
    data = dump_config(cfg)
    if cfg.generator == "rules":
        data.pop("lm")
    else:
        data.pop("rules")
    # Version 2: the input's other fields in one JSON text column (`input_fields`), not a column each.
    # Version 3: `prox` records whether the other executor semantics decides a row differently.
    return {"output_format": 3, **{k: data[k] for k in _FINGERPRINT_KEYS if k in data}}


def _read_file(batch: pa.Table, fs, options: ReadOptions):
    """Ray Data UDF: one input file per call, yielding row batches (Ray splits them into blocks)."""
    for item in batch.to_pylist():
        file = InputFile(item["path"], item["source"], item["format"])
        for rows in read_rows(fs, file, options, frozenset(item["skip"])):
            yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)


class _PartsDatasink(Datasink):
    """Commits every block it receives as parts of `Output` (atomic, idempotent under retries)."""

    def __init__(self, output_uri: str):
        self.output_uri = output_uri

    def write(self, blocks, ctx) -> tuple[int, int]:
        output = Output(self.output_uri)
        good = bad = 0
        for block in blocks:
            rows = block.to_pylist() if isinstance(block, pa.Table) else block.to_dict("records")
            if rows:
                g, b = output.write_rows(rows)
                good, bad = good + g, bad + b
        return good, bad


def check(cfg: ProxRefineConfig) -> None:
    """Inputs, models and the output directory, before Ray starts or a model loads: a missing input, or an
    output directory holding another job's parts (without `overwrite`), is an `InputError`."""
    try:
        scan_inputs(cfg.input, cfg.other_files)  # quietly: the run lists them again, with its one warning
    except FileNotFoundError as err:
        raise InputError(str(err)) from None  # it names the key: "input '...' does not exist"
    if cfg.generator == "lm":
        require_model(cfg.lm.doc_engine.model, "lm.doc_engine.model")
        require_model(cfg.lm.chunk_engine.model, "lm.chunk_engine.model")
    try:
        Output(cfg.output_dir).check(fingerprint(cfg), cfg.overwrite)
    except OutputMismatchError as err:
        raise InputError(f"output_dir: {err}") from None


def run(cfg: ProxRefineConfig) -> Result:
    """Run (or resume) the job on the current Ray cluster; writes data/ and errors/ parts, summary.json (the
    corpus statistics, `compute_stats`, plus `this_run`) and run.json to `cfg.output_dir` (path or URI)."""
    check(cfg)
    output = Output(cfg.output_dir)
    # run.json is recorded on local disk; for a remote output_dir it is copied there at the end.
    record_dir = output.root if output.is_local else tempfile.mkdtemp(prefix="prox-run-")
    try:
        with Workflow("prox_refine", cfg, record_dir) as wf:
            with wf.phase("refine"):
                stats = _refine(cfg, output)
            result = wf.finish(
                stats,
                f"refined {stats['documents_refined']} of {stats['documents_in']} documents: kept "
                f"{stats['documents_kept']}, {stats['errors']} errors, word retention {stats['word_retention']} "
                f"-> {cfg.output_dir}",
            )
    finally:
        if not output.is_local:
            for name in ("run.json", SUMMARY_FILE):
                if (Path(record_dir) / name).is_file():
                    output.write_json(name, json.loads((Path(record_dir) / name).read_text()))
    return Result(cfg.output_dir, result.summary, result.message)


def _refine(cfg: ProxRefineConfig, output: Output) -> dict[str, Any]:
    """The Ray Data plan: read -> doc and chunk levels on the engine stage -> committed parts; the stats."""
    files = list_inputs(cfg.input, cfg.other_files)
    fs, _ = filesystem(cfg.input)
    output.prepare(fingerprint(cfg), cfg.overwrite)
    done = output.done_rows()
    resumed = sum(len(rows) for rows in done.values())
    log.info("refining %s (%d files, %d rows already committed) with the %s generator",
             cfg.input, len(files), resumed, cfg.generator)  # fmt: skip
    started = time.perf_counter()
    items = [
        {"path": f.path, "source": f.source, "format": f.format, "skip": sorted(done.get(f.source, ()))}
        for f in files
    ]
    options = ReadOptions(
        cfg.text_field, cfg.id_field, cfg.max_line_bytes, cfg.max_text_chars, cfg.rows_per_block
    )
    # Ray merges a task's outputs into blocks of up to this size, and a dataset keeps the context it was made
    # with: small blocks commit (and so resume) often.
    context = ray.data.DataContext.get_current()
    default_block_bytes, context.target_max_block_size = context.target_max_block_size, cfg.block_bytes
    try:
        ds = ray.data.from_items(items, override_num_blocks=len(items))
    finally:
        context.target_max_block_size = default_block_bytes
    ds = ds.map_batches(
        _read_file,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"fs": fs, "options": options},
        num_cpus=cfg.read_cpus,
    )
    if cfg.generator == "lm":
        generator, doc_engine, chunk_engine = LMGenerator(cfg.lm), cfg.lm.doc_engine, cfg.lm.chunk_engine
    else:
        generator, doc_engine, chunk_engine = RulesGenerator(cfg.rules, cfg.tokenizer), None, None
    doc = DocLevel(generator, doc_engine, cfg.executor)
    chunk = ChunkLevel(generator, chunk_engine, cfg.executor)
    if cfg.fuse_stages:
        ds = engine_map(ds, [doc, chunk], cfg.stage)
    else:
        ds = engine_map(ds, [doc], cfg.stage)
        ds = engine_map(ds, [chunk], cfg.stage.model_copy(update={"actors": cfg.chunk_actors}))
    ds.write_datasink(_PartsDatasink(cfg.output_dir), ray_remote_args={"num_cpus": cfg.read_cpus})
    wall = time.perf_counter() - started
    stats = compute_stats(output)
    stats["semantics"] = {"mode": cfg.executor.semantics, **stats["semantics"]}
    processed = stats["documents_in"] - resumed
    stats["this_run"] = {
        "documents": processed,
        "resumed_from": resumed,
        "wall_s": round(wall, 3),
        "documents_per_s": round(processed / wall, 3) if wall > 0 else None,
    }
    return stats
