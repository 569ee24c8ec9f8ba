"""The decontamination job on Ray Data: evaluation sets against a corpus, verdicts, evidence, a cleaned corpus.

    index (driver)     the evaluation sets' n-grams (`index.EvalIndex`), put in the object store once
    read, scan and     actors, each getting the index once, read whole corpus files in chunks (`reading`: plain
    commit (actors)    JSONL by Arrow, the rest and bad rows by ProX's reader), scan each chunk and commit it
                       atomically as data/ (+ cleaned/) and errors/ parts; only counts come out
    reduce (driver)    hits -> per-example verdicts under every rule (`rules.verdict`, as `check_example`),
                       the longest match and the matching documents; Min-K% beside them when configured;
                       verdicts.parquet, report.md, summary.json, and the evidence database

A rerun on the same `output_dir` skips the documents already committed, so a job killed mid-scan completes on
rerun with every document scanned exactly once; the reduce always reads every committed part.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from pydantic import Field, model_validator

from rayflow.config import Config, dump_config
from rayflow.data.decontam.clean import FilterConfig, clean_document
from rayflow.data.decontam.evalsets import EvalSetConfig, Example, read_eval_set
from rayflow.data.decontam.evidence import EvidenceDB
from rayflow.data.decontam.index import EvalIndex
from rayflow.data.decontam.minkprob import MinKConfig, MinKTask
from rayflow.data.decontam.reading import TokenChunk, Tokeniser, read_chunks
from rayflow.data.decontam.rules import RULES, NormalizeConfig, Rule, RulesConfig, tokenize, verdict
from rayflow.data.engine_stage import StageConfig, engine_map
from rayflow.data.prox.output import DATA, ERRORS, Output, OutputMismatchError, error_table
from rayflow.data.prox.reader import InputFile, ReadOptions, filesystem, list_inputs
from rayflow.llm import load_tokenizer
from rayflow.runinfo import package_versions
from rayflow.workflow import SUMMARY_FILE, InputError, Result, Workflow, require_model

log = logging.getLogger(__name__)

CLEANED = "cleaned"
HIT = pa.struct([("example", pa.int32()), ("length", pa.int16()), ("pos", pa.int32()), ("doc_pos", pa.int32())])
SCAN_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("id", pa.string()),
        ("n_bytes", pa.int64()),
        ("scan_s", pa.float64()),  # the scan actor's CPU seconds reading and scanning the chunk, shared by its rows
        ("hits", pa.list_(HIT)),
        ("fragments", pa.list_(pa.string())),
        ("error", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)
DATA_COLUMNS = ("source", "row", "id", "n_bytes", "scan_s", "hits")
CLEANED_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("fragment", pa.int64()), ("text", pa.string())]
)
SHIPPED_SETS = [
    EvalSetConfig(name="rayflow-qa", path="examples/decontam/qa.jsonl"),
    EvalSetConfig(name="rayflow-zh", path="examples/decontam/zh.jsonl", fields=["text"], split="test"),
]


class DecontamConfig(Config):
    """Decontamination job: evaluation sets x a corpus -> per-example verdicts, CONDA evidence, a clean corpus."""

    eval_sets: list[EvalSetConfig] = Field(SHIPPED_SETS, min_length=1, description="evaluation sets to check")
    corpus: str = Field("examples/decontam/corpus.jsonl", description="JSONL(.gz)/Parquet file or directory")
    corpus_name: str | None = Field(None, description="CONDA's 'Contaminated Source'; None = corpus file name")
    text_field: str = Field("text", description="corpus field holding the document")
    id_field: str = Field("id", description="corpus id field; missing ids become <file>:<row>")
    output_dir: str = Field("outputs/decontam", description="data/, errors/, cleaned/, verdicts, reports")
    overwrite: bool = Field(False, description="clear output_dir's parts first instead of resuming")
    rules: RulesConfig = RulesConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    evidence_rule: Rule = Field("gpt3", description="the rule whose verdicts become the evidence rows")
    bloom_fpr: float = Field(1e-3, gt=0, lt=1, description="Bloom prefilter false-positive rate (exact anyway)")
    filter: FilterConfig = FilterConfig()
    scan: StageConfig = Field(
        StageConfig(cpus_per_actor=1.0),
        description="scan actors: each holds the index and reads and scans whole corpus files (batch_size unused)",
    )
    rows_per_block: int = Field(256, ge=1, description="rows per batch of ProX's reader (compressed, Parquet, bad)")
    block_bytes: int = Field(16 << 20, ge=1 << 12, description="corpus bytes per scanned and committed part")
    max_line_bytes: int = Field(8 << 20, ge=1, description="longer JSONL lines become error records")
    max_text_chars: int = Field(2_000_000, ge=1, description="longer documents become error records")
    min_k: MinKConfig | None = Field(None, description="Min-K% Prob on a model (model-based evidence)")
    evidence_db: str | None = Field(None, description="SQLAlchemy URL; None = sqlite:///<output_dir>/evidence.db")
    reference: str = Field("", description="CONDA's 'Reference' of the evidence rows this run files")
    max_doc_ids: int = Field(20, ge=0, description="matching corpus documents listed per example")

    @model_validator(mode="after")
    def _unique_sets(self) -> DecontamConfig:
        names = [(s.name, s.subset) for s in self.eval_sets]
        if len(set(names)) != len(names):
            raise ValueError("eval_sets: two sets share a name and subset")
        return self


def fingerprint(cfg: DecontamConfig, index: EvalIndex) -> dict[str, Any]:
    """What the committed parts depend on: a resumed run must match it."""
    data = dump_config(cfg)
    keys = ("corpus", "text_field", "id_field", "normalize", "filter", "max_line_bytes", "max_text_chars")
    return {**{k: data[k] for k in keys}, "index": index.fingerprint, "gpt3_n": cfg.rules.gpt3_n}


class ScanOutput(Output):
    """ProX's output directory (atomic parts, the config fingerprint) with this job's parts: `data/` holds one
    row per scanned document (its hits), `cleaned/` the kept fragments, `errors/` ProX's error records."""

    def prepare(self, fingerprint: dict, overwrite: bool) -> None:
        super().prepare(fingerprint, overwrite)
        if overwrite:
            self.fs.delete_dir_contents(self.path(CLEANED), missing_dir_ok=True)
        self.fs.create_dir(self.path(CLEANED), recursive=True)
        # A kill between a cleaned part and its data part leaves the cleaned one alone: its rows are rescanned.
        data = {posixpath.basename(p) for p in self.parts(DATA)}
        for path in self.parts(CLEANED):
            if posixpath.basename(path) not in data:
                self.fs.delete_file(path)

    def read(self, path: str, columns: list[str]) -> pa.Table:
        with self.fs.open_input_file(path) as f:
            return pq.read_table(f, columns=columns)

    def done_rows(self) -> dict[str, set[int]]:
        done: dict[str, set[int]] = defaultdict(set)
        for path in self.parts(DATA) + self.parts(ERRORS):
            table = self.read(path, ["source", "row"])
            for source, row in zip(table.column("source").to_pylist(), table.column("row").to_pylist()):
                done[source].add(row)
        return done

    def commit(self, block: pa.Table) -> tuple[int, int]:
        """Commit one block (`SCAN_SCHEMA`): cleaned part (when filtering), then the data part, then the errors
        part, each named by its rows' keys (a retried block replaces its parts); returns (documents, errors)."""
        failed = pc.is_valid(block.column("error"))
        good, bad = block.filter(pc.invert(failed)), block.filter(failed)
        if len(good):
            name = _part_name(good)
            fragments = good.column("fragments").combine_chunks()
            if fragments.null_count < len(good):  # filtering: every good row has its list
                cleaned = [{"id": r["id"], "source": r["source"], "row": r["row"], "fragment": i, "text": f}
                           for r in good.select(["id", "source", "row", "fragments"]).to_pylist()
                           for i, f in enumerate(r["fragments"])]  # fmt: skip
                self._put(CLEANED, name, pa.Table.from_pylist(cleaned, schema=CLEANED_SCHEMA))
            self._put(DATA, name, good.select(list(DATA_COLUMNS)))
        if len(bad):
            self._put(ERRORS, _part_name(bad), error_table(bad.to_pylist()))
        return len(good), len(bad)

    def _put(self, kind: str, name: str, table: pa.Table) -> None:
        tmp = self.path(kind, f".tmp-{uuid.uuid4().hex}-{name}")
        with self.fs.open_output_stream(tmp) as f:  # no dictionaries or statistics: nothing reads them; 40% faster
            pq.write_table(table, f, use_dictionary=False, write_statistics=False)
        self.fs.move(tmp, self.path(kind, name))


def _part_name(rows: pa.Table) -> str:
    keys = sorted(f"{s}\x00{r}" for s, r in zip(rows.column("source").to_pylist(), rows.column("row").to_pylist()))
    return f"part-{hashlib.sha1(chr(10).join(keys).encode()).hexdigest()[:20]}.parquet"


COUNTS = pa.schema([("documents", pa.int64()), ("errors", pa.int64())])


class Scanner:
    """Ray Data actor: reads whole corpus files (`reading.read_chunks`), scans each chunk with the index
    (fetched once from the object store) and commits it (`ScanOutput.commit`: a row per document with its
    hits and, when filtering, its kept fragments; ProX's error records as they were read). Only a row of counts
    per chunk comes out: neither the text nor the hits cross the object store, and each chunk is its own part."""

    def __init__(self, index_ref: list, filter_cfg: FilterConfig, gpt3_n: int, fs, options: ReadOptions,
                 chunk_bytes: int, output_uri: str):  # fmt: skip
        self.index: EvalIndex = ray.get(index_ref[0])
        self.filter, self.gpt3_n = filter_cfg, gpt3_n
        self.fs, self.options, self.chunk_bytes = fs, options, chunk_bytes
        self.output = ScanOutput(output_uri)
        self.tokeniser = Tokeniser(self.index.ascii_table)

    def __call__(self, batch: pa.Table):
        for item in batch.to_pylist():
            file = InputFile(item["path"], item["source"], item["format"])
            # Without the filter no text is needed: plain JSONL chunks come tokenised by the reader.
            tokeniser = None if self.filter.enabled else self.tokeniser
            chunks = read_chunks(self.fs, file, self.options, frozenset(item["skip"]), self.chunk_bytes, tokeniser)
            while True:
                started = time.process_time()  # scan_s counts reading too: the reader may have tokenised
                if (rows := next(chunks, None)) is None:
                    break
                tokens = isinstance(rows, TokenChunk)
                good, bad = self.output.commit(self.scan_tokens(rows, file, started) if tokens else self.scan(rows, started))
                yield pa.table([[good], [bad]], schema=COUNTS)

    def scan_tokens(self, chunk: TokenChunk, file: InputFile, started: float) -> pa.Table:
        """A chunk the reader tokenised -> `SCAN_SCHEMA` (good rows only, no fragments); `started`: the process
        time its reading began."""
        n = len(chunk.rows)
        doc, example, length, pos, doc_pos = self.index.scan_tokens(chunk)
        order = np.argsort(doc, kind="stable")
        hits = _hits_column(n, doc[order], *(a[order] for a in (example, length, pos, doc_pos)))
        source, empty = pa.repeat(pa.scalar(file.source, pa.string()), n), pa.repeat(pa.scalar("", pa.string()), n)
        nulls = pa.nulls(n, pa.string())
        scan_s = pa.array(np.full(n, (time.process_time() - started) / max(n, 1)))
        columns = [source, pa.array(chunk.rows), chunk.ids, pa.array(chunk.n_bytes), scan_s, hits,
                   pa.nulls(n, pa.list_(pa.string())), nulls, empty, empty]  # fmt: skip
        return pa.table(columns, schema=SCAN_SCHEMA)

    def scan(self, batch: pa.Table, started: float) -> pa.Table:
        """One chunk (`reading.ROWS_SCHEMA`) -> `SCAN_SCHEMA`: hits as Arrow list columns straight from the
        index's arrays; `scan_s` is the chunk's CPU seconds since `started` (its reading began), shared equally
        by its documents."""
        text = batch.column("text").combine_chunks()
        good = pc.is_null(batch.column("error")).combine_chunks()
        rows = np.flatnonzero(good.to_numpy(zero_copy_only=False))
        doc, example, length, pos, doc_pos = self.index.scan_arrays(text.filter(good) if len(rows) < len(text) else text)
        order = np.argsort(doc, kind="stable")
        doc = rows[doc[order]]
        hits = _hits_column(len(text), doc, *(a[order] for a in (example, length, pos, doc_pos)))
        n_bytes = pc.if_else(good, pc.fill_null(pc.binary_length(text), 0), 0).cast(pa.int64())
        fragments: list[list[str] | None] = [None] * len(text)
        if self.filter.enabled:
            texts = text.to_pylist()
            starts = [[] for _ in texts]
            for d, m, at in zip(doc.tolist(), length[order].tolist(), doc_pos[order].tolist()):
                if m == self.gpt3_n:
                    starts[d].append(at)
            for i in rows.tolist():
                fragments[i] = clean_document(texts[i], starts[i], self.gpt3_n, self.filter, self.index.normalize)
        columns = {name: batch.column(name) for name in ("source", "row", "id", "error", "reason", "raw")}
        columns.update(n_bytes=n_bytes, hits=hits, fragments=pa.array(fragments, pa.list_(pa.string())))
        columns["scan_s"] = pa.array(np.full(len(text), (time.process_time() - started) / max(len(text), 1)))
        return pa.table({name: columns[name] for name in SCAN_SCHEMA.names}, schema=SCAN_SCHEMA)


def _hits_column(n: int, doc: np.ndarray, *hit: np.ndarray) -> pa.ListArray:
    """Per document (0..n-1), its hits as a list of `HIT` structs; `doc` sorted, `hit` its hits' fields."""
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(doc, minlength=n), out=offsets[1:])
    fields = [pa.array(a, t.type) for a, t in zip(hit, HIT)]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.StructArray.from_arrays(fields, fields=list(HIT)))


def load_examples(cfg: DecontamConfig) -> list[Example]:
    """Every evaluation set's examples, in config order."""
    return [e for s in cfg.eval_sets for e in read_eval_set(s)]


def build_index(cfg: DecontamConfig, examples: list[Example]) -> EvalIndex:
    return EvalIndex(
        [tokenize(e.text, cfg.normalize) for e in examples],
        [cfg.rules.n(r) for r in RULES],
        cfg.normalize,
        cfg.bloom_fpr,
    )


def check(cfg: DecontamConfig) -> None:
    """Inputs, the model and the output directory, before Ray starts or a model loads."""
    try:
        list_inputs(cfg.corpus)
    except FileNotFoundError as err:
        raise InputError(str(err).replace("input", "corpus", 1)) from None
    examples = load_examples(cfg)
    if cfg.min_k is not None:
        require_model(cfg.min_k.engine.model, "min_k.engine.model")
    output = ScanOutput(cfg.output_dir)
    if not output.is_local and cfg.evidence_db is None:
        raise InputError("evidence_db: give an SQLAlchemy URL when output_dir is not a local path")
    try:
        output.check(fingerprint(cfg, build_index(cfg, examples)), cfg.overwrite)
    except OutputMismatchError as err:
        raise InputError(f"output_dir: {err}") from None


def run(cfg: DecontamConfig) -> Result:
    """Run (or resume) the job on the current Ray cluster; see the module docstring for what it writes."""
    check(cfg)
    output = ScanOutput(cfg.output_dir)
    record_dir = output.root if output.is_local else tempfile.mkdtemp(prefix="decontam-run-")
    db_url = cfg.evidence_db or f"sqlite:///{posixpath.join(output.root, 'evidence.db')}"
    run_id = uuid.uuid4().hex[:12]
    try:
        with Workflow("decontaminate", cfg, record_dir) as wf:
            with wf.phase("index"):
                examples = load_examples(cfg)
                index = build_index(cfg, examples)
            db = EvidenceDB(db_url)
            source = cfg.corpus_name or posixpath.basename(cfg.corpus.rstrip("/")) or cfg.corpus
            db.start_run(run_id, "decontaminate", dump_config(cfg), package_versions(), source)
            with wf.phase("scan"):
                scan = _scan(cfg, output, index)
            with wf.phase("reduce"):
                rows = reduce_hits(output, examples, index, cfg)
            if cfg.min_k is not None:
                with wf.phase("min_k"):
                    _min_k(cfg, examples, rows)
            with wf.phase("report"):
                summary = _report(cfg, output, examples, rows, scan)
                findings = evidence_rows(cfg, examples, rows, source)
                summary["evidence_added"] = db.finish_run(run_id, _matches(examples, rows), findings)
                summary["run_id"], summary["evidence_db"] = run_id, db_url
                db.close()
            dirty = summary["dirty"][cfg.evidence_rule]
            result = wf.finish(
                summary,
                f"scanned {summary['documents_scanned']} documents ({summary['errors']} errors): "
                f"{dirty} of {len(examples)} examples dirty under {cfg.evidence_rule} -> {cfg.output_dir}",
            )
    finally:
        if not output.is_local:
            for name in ("run.json", SUMMARY_FILE):
                if (Path(record_dir) / name).is_file():
                    output.write_json(name, json.loads((Path(record_dir) / name).read_text()))
    return Result(cfg.output_dir, result.summary, result.message)


def _scan(cfg: DecontamConfig, output: ScanOutput, index: EvalIndex) -> dict[str, Any]:
    files = list_inputs(cfg.corpus)
    fs, _ = filesystem(cfg.corpus)
    output.prepare(fingerprint(cfg, index), cfg.overwrite)
    done = output.done_rows()
    resumed = sum(len(rows) for rows in done.values())
    log.info("scanning %s (%d files, %d documents already committed) for %d n-gram lengths",
             cfg.corpus, len(files), resumed, len(index.lengths))  # fmt: skip
    started = time.perf_counter()
    items = [
        {"path": f.path, "source": f.source, "format": f.format, "skip": sorted(done.get(f.source, ()))}
        for f in files
    ]
    options = ReadOptions(cfg.text_field, cfg.id_field, cfg.max_line_bytes, cfg.max_text_chars, cfg.rows_per_block)
    # Largest files first, one per actor call: the pool stays busy until the end.
    sizes = {info.path: info.size or 0 for info in fs.get_file_info([item["path"] for item in items])}
    items.sort(key=lambda item: -sizes[item["path"]])
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    index_ref = ray.put(index)  # the broadcast: each scan actor fetches it once
    ds = ds.map_batches(
        Scanner,
        fn_constructor_args=([index_ref], cfg.filter, cfg.rules.gpt3_n, fs, options, cfg.block_bytes,
                             cfg.output_dir),
        **{**cfg.scan.map_args(), "batch_size": 1, "num_gpus": None},
    )  # fmt: skip
    for _ in ds.iter_batches(batch_size=None):  # the counts; the parts are committed by the actors
        pass
    wall = time.perf_counter() - started
    return {"resumed_from": resumed, "wall_s": round(wall, 3)}


def reduce_hits(output: ScanOutput, examples: list[Example], index: EvalIndex, cfg: DecontamConfig) -> list[dict]:
    """Per example (in `examples` order): every rule's verdict, the longest match (tokens covered by the longest
    run of consecutive found n-grams of the shortest rule length in one document, or the whole example when it
    is shorter and occurs whole), and the ids of the documents that matched."""
    found: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    per_doc: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    docs: dict[int, dict[str, None]] = defaultdict(dict)
    n_min = min(cfg.rules.n(r) for r in RULES)
    lengths = [len(tokenize(e.text, cfg.normalize)) for e in examples]
    for path in output.parts(DATA):
        table = output.read(path, ["id", "hits"])
        table = table.filter(pc.greater(pc.list_value_length(table.column("hits")), 0))
        for doc_id, hits in zip(table.column("id").to_pylist(), table.column("hits").to_pylist()):
            for h in hits:
                ex, m, pos = h["example"], h["length"], h["pos"]
                found[ex][m].add(pos)
                docs[ex].setdefault(doc_id)
                if m == n_min or m == lengths[ex]:
                    per_doc[ex][doc_id].add(pos if m == n_min else -1)
    rows = []
    for ex, n_tokens in enumerate(lengths):
        row: dict[str, Any] = {"n_tokens": n_tokens}
        for rule in RULES:
            n = cfg.rules.n(rule)
            v = verdict(rule, n_tokens, found[ex][n], 0 in found[ex][n_tokens], cfg.rules)
            row[f"{rule}_score"], row[f"{rule}_dirty"] = v.score, v.dirty
            if rule == "coverage":
                row["coverage_bucket"] = v.bucket
        longest = 0
        for positions in per_doc[ex].values():
            if -1 in positions:
                longest = max(longest, n_tokens)
            run = 0
            for p in sorted(q for q in positions if q >= 0):
                run = run + 1 if p - 1 in positions else 1
                longest = max(longest, run + n_min - 1)
        row["longest_match"] = longest
        row["doc_ids"] = list(docs[ex])[: cfg.max_doc_ids]
        row["n_docs"] = len(docs[ex])
        row["min_k_nll"] = row["min_k_suspected"] = row["min_k_error"] = None
        rows.append(row)
    return rows


def _min_k(cfg: DecontamConfig, examples: list[Example], rows: list[dict]) -> None:
    mk = cfg.min_k
    tokenizer = load_tokenizer(mk.engine)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ds = ray.data.from_items([{"key": i, "text": e.text} for i, e in enumerate(examples)])
    ds = engine_map(ds, [MinKTask(mk.engine, mk.k, start)], mk.stage)
    for out in ds.take_all():
        row = rows[out["key"]]
        row["min_k_nll"], row["min_k_error"] = out["min_k_nll"], out["error"]
        row["min_k_suspected"] = None if out["min_k_nll"] is None else out["min_k_nll"] <= mk.threshold


def _pct(flags: list[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):.2f}" if flags else ""


def evidence_rows(cfg: DecontamConfig, examples: list[Example], rows: list[dict], source: str) -> list[dict]:
    """CONDA rows: per evaluation set, the share of dirty examples per split under `evidence_rule`
    (`data-based`), and under Min-K% (`model-based`) when it ran; a split without examples stays empty."""
    findings = []
    by_set: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_set[(e.dataset, e.subset)].append(i)
    rule = cfg.evidence_rule
    checks = [("data-based", source, "corpus", rule, f"{rule}_dirty", cfg.rules.model_dump())]
    if cfg.min_k is not None:
        model = cfg.min_k.source_name or cfg.min_k.engine.model
        params = {"k": cfg.min_k.k, "threshold": cfg.min_k.threshold, "model": cfg.min_k.engine.model}
        checks.append(("model-based", model, "model", "min-k", "min_k_suspected", params))
    for (dataset, subset), members in by_set.items():
        for approach, src, kind, method, flag, params in checks:
            split = {s: [bool(rows[i][flag]) for i in members if examples[i].split == s
                         and rows[i][flag] is not None] for s in ("train", "dev", "test")}  # fmt: skip
            findings.append({
                "dataset": dataset, "subset": subset, "source": src, "source_type": kind,
                "train": _pct(split["train"]), "dev": _pct(split["dev"]), "test": _pct(split["test"]),
                "approach": approach, "reference": cfg.reference, "pr": "", "method": method, "params": params,
            })  # fmt: skip
    return findings


def _matches(examples: list[Example], rows: list[dict]) -> list[dict]:
    keys = ("n_tokens", "gpt3_score", "gpt3_dirty", "palm_score", "palm_dirty", "coverage_score",
            "coverage_bucket", "coverage_dirty", "longest_match", "min_k_nll", "min_k_suspected")  # fmt: skip
    return [
        {"dataset": e.dataset, "subset": e.subset, "split": e.split, "idx": e.idx, "example_id": e.id,
         **{k: r[k] for k in keys}, "doc_ids": json.dumps(r["doc_ids"])}
        for e, r in zip(examples, rows)
    ]


def _report(cfg, output: ScanOutput, examples: list[Example], rows: list[dict], scan: dict) -> dict[str, Any]:
    """verdicts.parquet, report.md and the summary (counts over every committed part)."""
    table = pa.Table.from_pylist(
        [{"dataset": e.dataset, "subset": e.subset, "split": e.split, "idx": e.idx, "id": e.id, **r}
         for e, r in zip(examples, rows)]
    )
    with output.fs.open_output_stream(output.path("verdicts.parquet")) as f:
        pq.write_table(table, f)
    documents = n_bytes = hits = 0
    scan_s = 0.0
    for path in output.parts(DATA):
        t = output.read(path, ["n_bytes", "scan_s", "hits"])
        documents += len(t)
        n_bytes += pc.sum(t.column("n_bytes")).as_py() or 0
        scan_s += pc.sum(t.column("scan_s")).as_py() or 0.0
        hits += pc.sum(pc.list_value_length(t.column("hits"))).as_py() or 0
    errors: Counter = Counter()
    for path in output.parts(ERRORS):
        errors.update(output.read(path, ["error"]).column("error").to_pylist())
    this_run_docs = documents + sum(errors.values()) - scan["resumed_from"]
    summary: dict[str, Any] = {
        "documents_in": documents + sum(errors.values()),
        "documents_scanned": documents,
        "corpus_mb": round(n_bytes / 1e6, 6),
        "errors": sum(errors.values()),
        "errors_by_kind": dict(sorted(errors.items())),
        "hits": hits,
        "scan_cpu_s": round(scan_s, 3),
        "scan_mb_per_cpu_s": round(n_bytes / 1e6 / scan_s, 3) if scan_s else None,
        "examples": len(examples),
        "dirty": {r: sum(bool(x[f"{r}_dirty"]) for x in rows) for r in RULES},
        "coverage_buckets": dict(Counter(x["coverage_bucket"] for x in rows)),
        "min_k_suspected": None if cfg.min_k is None else sum(bool(x["min_k_suspected"]) for x in rows),
        "dirty_examples": {r: [f"{e.dataset}/{e.id}" for e, x in zip(examples, rows) if x[f"{r}_dirty"]]
                           for r in RULES},
        "this_run": {**scan, "documents": this_run_docs},
    }
    if cfg.filter.enabled:
        kept = sum(len(output.read(p, ["id"])) for p in output.parts(CLEANED))
        summary["cleaned_fragments"] = kept
    with output.fs.open_output_stream(output.path("report.md")) as f:
        f.write(_markdown(cfg, examples, rows, summary).encode())
    return summary


def _markdown(cfg, examples: list[Example], rows: list[dict], summary: dict) -> str:
    lines = [
        "# Decontamination report",
        "",
        (
            f"Corpus `{cfg.corpus}`: {summary['documents_scanned']} documents ({summary['corpus_mb']} MB), "
            f"{summary['errors']} error records, {summary['hits']} n-gram hits."
        ),
        "",
        "| set | split | examples | gpt3 dirty | palm dirty | coverage dirty | coverage partial | Min-K% suspected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for e, r in zip(examples, rows):
        groups[(e.dataset, e.split)].append(r)
    for (dataset, split), rs in groups.items():
        mk = "-" if cfg.min_k is None else sum(bool(r["min_k_suspected"]) for r in rs)
        lines.append(
            f"| {dataset} | {split} | {len(rs)} | {sum(r['gpt3_dirty'] for r in rs)} | "
            f"{sum(r['palm_dirty'] for r in rs)} | {sum(r['coverage_dirty'] for r in rs)} | "
            f"{sum(r['coverage_bucket'] == 'partial' for r in rs)} | {mk} |"
        )
    lines += ["", "## Examples with any hit", "", "| example | gpt3 | palm | coverage | longest | documents |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for e, r in zip(examples, rows):
        if r["n_docs"]:
            lines.append(
                f"| {e.dataset}/{e.id} | {r['gpt3_score']:.2f} | {r['palm_score']:.2f} | "
                f"{r['coverage_score']:.2f} ({r['coverage_bucket']}) | {r['longest_match']} | "
                f"{', '.join(r['doc_ids'][:5])} |"
            )
    return "\n".join(lines) + "\n"
