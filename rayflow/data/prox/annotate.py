"""Annotation for refiner training: a teacher writes ProX programs for sampled documents, on Ray Data.

For each document the teacher writes a doc-level program and, for each chunk the ProX job would cut it into, a
chunk-level program. Every example is a (prompt, program) pair whose prompt is built by the ProX job's own
functions (`LMGenerator.doc_prompts` / `chunk_prompts` with the job's `lm` settings and the refiner's tokenizer),
so it is byte for byte the prompt the job sends to the refiner at inference: the refiner is trained on exactly
what it will read. The prompt preset (`lm.preset`, resolved) is recorded with the data (`prompt_preset`).

Teachers:

* `rules`: rayflow's rules generator (offline). It writes one chunk program per document; each chunk's target
  is that program restricted to the chunk: its `remove_lines` intervals clipped to the chunk's lines, its
  `normalize` calls whose source string occurs in the chunk, else `keep_chunk()`;
* `engine`: any model through rayflow's engine layer (vLLM, transformers, an OpenAI-compatible server), asked
  with annotation prompts of rayflow's own writing (`DOC_INSTRUCTIONS`, `CHUNK_INSTRUCTIONS`) and greedy
  decoding, one call per document and per chunk.

Only programs the parser reads are kept: a program with an error op, an unknown call, no valid call, or a
`remove_lines` outside its chunk's lines is rejected, written to errors.jsonl with the reason, and counted. Kept
programs are written canonically (`canonical_program`): comments dropped, touching intervals merged, one call
per line; the executor treats the canonical program exactly as the teacher's.

Output: `train.parquet` and `heldout.parquet` (one row per example, `EXAMPLE_COLUMNS`), errors.jsonl,
summary.json and run.json.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, engine_map, generate_rows
from rayflow.data.prox.chunking import chunk_document
from rayflow.data.prox.lm import LMConfig, LMGenerator
from rayflow.data.prox.parser import FUNCTIONS_CHUNK, FUNCTIONS_DOC, Op, parse_program
from rayflow.data.prox.rules import RulesConfig, RulesGenerator
from rayflow.data.prox.web_pages import make_pages
from rayflow.llm import Engine, EngineConfig, PromptRejected, SamplingParams, load_tokenizer
from rayflow.workflow import InputError, Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)

Split = Literal["train", "heldout"]

DOC_INSTRUCTIONS = (
    "You label web documents for a pre-training corpus. Read the document below and answer with exactly one "
    "line: drop_doc() if it is low quality (spam, keyword lists, placeholder text, error pages, login forms, "
    "link lists, fragments too short to teach anything), keep_doc() otherwise.\n\n"
)
CHUNK_INSTRUCTIONS = (
    "You clean web documents for a pre-training corpus. Each line below starts with its number in brackets. "
    "Write a program, one call per line, using only: remove_lines(line_start=N, line_end=M) to delete lines N "
    "to M inclusive (navigation, menus, cookie and login notices, share buttons, related links, comments, "
    'adverts, copyright and footer lines); normalize(source_str="...", target_str="") to replace page '
    "furniture inside a line, such as [edit]; keep_chunk() when nothing needs to change. Write nothing else."
    "\n\n"
)

EXAMPLE_COLUMNS = pa.schema(
    [
        ("doc_id", pa.string()),
        ("split", pa.string()),
        ("level", pa.string()),  # "doc" or "chunk"
        ("chunk_index", pa.int64()),  # 0 for doc examples
        ("first_line", pa.int64()),  # the chunk's first and last global line numbers (doc: the document's)
        ("last_line", pa.int64()),
        ("source", pa.string()),  # the text the prompt shows: the document, or the chunk's numbered lines
        ("prompt", pa.string()),  # the prompt ids decoded, for people
        ("prompt_ids", pa.list_(pa.int64())),
        ("program", pa.string()),  # canonical teacher program
        ("teacher_program", pa.string()),  # as the teacher wrote it
    ]
)


class GeneratedPages(Config):
    """Web-like pages from `rayflow.data.prox.web_pages` (held-out pages use unseen templates and texts)."""

    train: int = Field(0, ge=0, description="generated training pages")
    heldout: int = Field(0, ge=0, description="generated held-out pages")
    seed: int = Field(0, description="page generator seed")


class AnnotateConfig(Config):
    """Teacher annotation: documents in, (prompt, program) pairs as Parquet with a train/held-out split out."""

    output_dir: str = Field(
        "outputs/prox_annotate", description="train.parquet, heldout.parquet, errors.jsonl"
    )
    input: str | None = Field(None, description="JSONL corpus to sample documents from (None: none)")
    text_field: str = Field("text", description="input field holding the document")
    id_field: str = Field("id", description="input id field (missing: <file>:<line>)")
    sample: int | None = Field(None, ge=1, description="documents sampled from input (None: all)")
    heldout_fraction: float = Field(0.1, ge=0, le=1, description="share of input documents held out")
    heldout_inputs: list[str] = Field(
        default_factory=list, description="JSONL corpora whose every document is held out"
    )
    generated: GeneratedPages = GeneratedPages()
    seed: int = Field(0, description="sampling and split seed")
    teacher: Literal["rules", "engine"] = Field("rules", description="rules (offline) or engine")
    rules: RulesConfig = RulesConfig()
    engine: EngineConfig | None = Field(None, description="teacher model (teacher=engine)")
    teacher_max_tokens: int = Field(256, ge=1, description="engine teacher: tokens per program")
    lm: LMConfig = Field(
        LMConfig(), description="the ProX job's lm settings: prompts use doc_engine's tokenizer and context"
    )
    stage: StageConfig = StageConfig(batch_size=32)


def canonical_program(ops: list[Op], level: str) -> str:
    """The program of `ops` written canonically: one call per line, no comments; `remove_lines` intervals
    sorted and merged (touching ones too, as the executor merges them); a `normalize` that deletes in the
    one-argument form; `keep_chunk()` / `keep_doc()` when nothing else remains. The executor gives the
    canonical program the same result as the original."""
    if level == "doc":
        return "drop_doc()" if any(op[0] == "drop_doc" for op in ops) else "keep_doc()"
    intervals = sorted((a, b) for name, a, b in ops if name == "remove_lines" and a is not None)
    merged: list[list[int]] = []
    for start, end in intervals:
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    lines = [f"remove_lines(line_start={a}, line_end={b})" for a, b in merged]
    for name, a, b in ops:
        if name == "normalize":
            # A deletion is written in the one-argument form, which deletes too (except for " ", which the
            # executor treats differently in the two forms): one `""` token less for a small model to get right.
            target = f', target_str="{b}"' if b is not None and (b or a == " ") else ""
            lines.append(f'normalize(source_str="{a}"{target})')
    return "\n".join(lines) or "keep_chunk()"


def restrict_to_chunk(ops: list[Op], first: int, last: int, chunk_text: str) -> list[Op]:
    """The part of a whole-document chunk program that concerns the chunk of lines `first`..`last`."""
    out: list[Op] = []
    for name, a, b in ops:
        if name == "remove_lines" and a is not None and a <= last and b >= first:
            out.append((name, max(a, first), min(b, last)))
        elif name == "normalize" and a and a in chunk_text:
            out.append((name, a, b))
    return out


def program_problem(program: str, level: str, first: int, last: int) -> str | None:
    """Why the parser does not read `program` cleanly (None when it does): see the module doc."""
    parsed = parse_program(program, FUNCTIONS_DOC if level == "doc" else FUNCTIONS_CHUNK)
    if parsed.n_error_ops:
        return f"{parsed.n_error_ops} error op(s)"
    if parsed.n_unknown_calls:
        return f"{parsed.n_unknown_calls} unknown call(s)"
    if not parsed.ops:
        return "no valid call"
    for name, a, b in parsed.ops:
        if name == "remove_lines" and a is not None and not (first <= a <= b <= last):
            return f"remove_lines({a}, {b}) outside lines {first}..{last}"
    return None


_LINE_NUMBER = re.compile(r"^\[(\d+)\]", re.MULTILINE)


def chunk_line_range(chunk: str) -> tuple[int, int]:
    """The first and last global line numbers of a numbered chunk."""
    numbers = [int(n) for n in _LINE_NUMBER.findall(chunk)]
    return numbers[0], numbers[-1]


class AnnotateTask:
    """Engine task: one document row in, its examples out (as a JSON list in `examples`, with `errors`)."""

    schema = pa.schema(
        [("doc_id", pa.string()), ("split", pa.string()), ("text", pa.string()),
         ("examples", pa.string()), ("errors", pa.string())]
    )  # fmt: skip

    def __init__(self, cfg: AnnotateConfig):
        self.cfg = cfg
        self.engine = cfg.engine if cfg.teacher == "engine" else None
        self.prompts = LMGenerator(cfg.lm)
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.lm.doc_engine)
        return self._tokenizer

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None:
        lm, tok = self.cfg.lm, self.tokenizer
        texts = [r["text"] for r in rows]
        doc_prompts = self.prompts.doc_prompts(texts, tok, lm.doc_engine.max_model_len)
        chunk_prompts = self.prompts.chunk_prompts(texts, tok, lm.chunk_engine.max_model_len)
        chunks = [chunk_document(t, tok, lm.chunk_tokens, lm.long_line) for t in texts]
        doc_programs, chunk_programs = self._teach(texts, chunks, engine)
        for i, row in enumerate(rows):
            examples, errors = [], []
            n_lines = len(row["text"].split("\n"))
            items = [("doc", 0, 0, n_lines - 1, row["text"], doc_prompts[i], doc_programs[i])]
            for j, (chunk, ids, program) in enumerate(zip(chunks[i], chunk_prompts[i], chunk_programs[i])):
                first, last = chunk_line_range(chunk)
                items.append(("chunk", j, first, last, chunk, ids, program))
            for level, j, first, last, source, ids, program in items:
                problem = program if isinstance(program, PromptRejected) else None
                problem = problem and f"the teacher refused the prompt: {problem.reason}"
                problem = problem or program_problem(program, level, first, last)
                if problem:
                    errors.append(
                        {"level": level, "chunk_index": j, "reason": problem, "program": str(program)}
                    )
                    continue
                functions = FUNCTIONS_DOC if level == "doc" else FUNCTIONS_CHUNK
                examples.append(
                    {
                        "doc_id": row["doc_id"], "split": row["split"], "level": level, "chunk_index": j,
                        "first_line": first, "last_line": last, "source": source,
                        "prompt": tok.decode(ids), "prompt_ids": ids,
                        "program": canonical_program(list(parse_program(program, functions).ops), level),
                        "teacher_program": program,
                    }
                )  # fmt: skip
            row["examples"], row["errors"] = json.dumps(examples), json.dumps(errors)

    def _teach(self, texts: list[str], chunks: list[list[str]], engine: Engine | None):
        """Per document, its doc program and one program (or `PromptRejected`) per chunk."""
        if self.cfg.teacher == "rules":
            rules = RulesGenerator(self.cfg.rules)
            doc = [g.program for g in rules.doc_programs(texts)]
            whole = [g.program for g in rules.chunk_programs(texts)]
            per_chunk = []
            for text_chunks, program in zip(chunks, whole):
                ops = list(parse_program(program, FUNCTIONS_CHUNK).ops)
                per_chunk.append(
                    [
                        canonical_program(restrict_to_chunk(ops, *chunk_line_range(c), _plain(c)), "chunk")
                        for c in text_chunks
                    ]
                )
            return doc, per_chunk
        params = SamplingParams(temperature=0.0, max_tokens=self.cfg.teacher_max_tokens)
        doc_out = generate_rows(engine, [[_ask(DOC_INSTRUCTIONS + t)] for t in texts], params)
        chunk_out = generate_rows(
            engine, [[_ask(CHUNK_INSTRUCTIONS + c) for c in cs] for cs in chunks], params
        )
        doc = [o if isinstance(o, PromptRejected) else o[0].text.strip() for o in doc_out]
        per_chunk = [
            [o] * len(cs) if isinstance(o, PromptRejected) else [g.text.strip() for g in o]
            for o, cs in zip(chunk_out, chunks)
        ]
        return doc, per_chunk


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _plain(chunk: str) -> str:
    """A numbered chunk's text without its line numbers."""
    return _LINE_NUMBER.sub("", chunk)


def _read_jsonl(path: str, text_field: str, id_field: str) -> list[dict[str, str]]:
    docs = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {n}: not JSON ({err.msg})") from None
            text = obj.get(text_field) if isinstance(obj, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{path}: line {n}: no text in field {text_field!r}")
            docs.append({"doc_id": str(obj.get(id_field) or f"{Path(path).name}:{n}"), "text": text})
    return docs


def documents(cfg: AnnotateConfig) -> list[dict[str, str]]:
    """The sampled documents `{doc_id, split, text}`, in a deterministic order."""
    docs: list[dict[str, str]] = []
    if cfg.input:
        pool = _read_jsonl(cfg.input, cfg.text_field, cfg.id_field)
        rng = random.Random(cfg.seed)
        if cfg.sample is not None and cfg.sample < len(pool):
            pool = rng.sample(pool, cfg.sample)
        for d in pool:
            d["split"] = "heldout" if rng.random() < cfg.heldout_fraction else "train"
        docs += pool
    for path in cfg.heldout_inputs:
        docs += [{**d, "split": "heldout"} for d in _read_jsonl(path, cfg.text_field, cfg.id_field)]
    g = cfg.generated
    for split, n in (("train", g.train), ("heldout", g.heldout)):
        docs += [{"doc_id": p["id"], "split": split, "text": p["text"]} for p in make_pages(n, split, g.seed)]
    return docs


def check(cfg: AnnotateConfig) -> None:
    """Inputs and models exist (before Ray starts)."""
    require_path(cfg.input, "input")
    for i, path in enumerate(cfg.heldout_inputs):
        require_path(path, f"heldout_inputs[{i}]")
    require_model(cfg.lm.doc_engine.model, "lm.doc_engine.model")
    if cfg.teacher == "engine":
        if cfg.engine is None:
            raise InputError("engine: teacher=engine needs an engine section")
        require_model(cfg.engine.model, "engine.model")
    if not (cfg.input or cfg.heldout_inputs or cfg.generated.train or cfg.generated.heldout):
        raise InputError("input: no documents (give input, heldout_inputs or generated pages)")


def run(cfg: AnnotateConfig) -> Result:
    """Annotate on the current Ray cluster; writes train.parquet, heldout.parquet, errors.jsonl, summary.json."""
    import ray

    check(cfg)
    out = Path(cfg.output_dir)
    with Workflow("prox_annotate", cfg, out) as wf:
        with wf.phase("read"):
            docs = documents(cfg)
        with wf.phase("annotate"):
            ds = ray.data.from_items(docs, override_num_blocks=max(1, min(len(docs) // 64, 64)))
            rows = engine_map(ds, [AnnotateTask(cfg)], cfg.stage).take_all()
        with wf.phase("write"):
            summary = _write(out, rows, cfg)
        return wf.finish(
            summary,
            f"annotated {summary['documents']} documents: {summary['examples']['train']} train and "
            f"{summary['examples']['heldout']} held-out examples, {summary['rejected']} programs rejected -> {out}",
        )


def _write(out: Path, rows: list[dict[str, Any]], cfg: AnnotateConfig) -> dict[str, Any]:
    examples = sorted(
        (e for r in rows for e in json.loads(r["examples"])),
        key=lambda e: (e["split"], e["doc_id"], e["level"] != "doc", e["chunk_index"]),
    )
    errors = [{"doc_id": r["doc_id"], **e} for r in rows for e in json.loads(r["errors"])]
    counts = {}
    for split in ("train", "heldout"):
        part = [e for e in examples if e["split"] == split]
        pq.write_table(pa.Table.from_pylist(part, schema=EXAMPLE_COLUMNS), out / f"{split}.parquet")
        counts[split] = len(part)
    with open(out / "errors.jsonl", "w") as fh:
        fh.writelines(
            json.dumps(e) + "\n" for e in sorted(errors, key=lambda e: (e["doc_id"], e["chunk_index"]))
        )
    by_level = {lvl: sum(e["level"] == lvl for e in examples) for lvl in ("doc", "chunk")}
    drops = sum(e["level"] == "doc" and e["program"] == "drop_doc()" for e in examples)
    removing = sum(e["level"] == "chunk" and "remove_lines" in e["program"] for e in examples)
    return {
        "documents": len(rows),
        "examples": counts,
        "by_level": by_level,
        "rejected": len(errors),
        "doc_drop_share": round(drops / max(by_level["doc"], 1), 4),
        "chunk_removing_share": round(removing / max(by_level["chunk"], 1), 4),
        "teacher": cfg.teacher if cfg.teacher == "rules" else cfg.engine.model,
        "prompt_preset": cfg.lm.resolved_preset,
        "tokenizer": cfg.lm.doc_engine.model,
        "lm": cfg.lm.model_dump(mode="json"),
    }
