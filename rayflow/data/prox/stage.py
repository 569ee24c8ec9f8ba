"""The two refinement levels as engine tasks (`rayflow.data.engine_stage`): rows in, rows out, no Ray.

`DocLevel` writes doc programs and runs them; `ChunkLevel` does the same at chunk level for the documents the
doc level kept. The engine stage runs them in an actor pool, one level per stage or both fused in one
(`rayflow.data.prox.pipeline`), and builds the `lm` generator's engine; the `rules` generator needs none.
Batches are Arrow tables with `READ_SCHEMA` in and `ROW_SCHEMA` out; tests call `EngineStage` directly. Rows
that arrive as error records pass through untouched, and a document the generator cannot handle (e.g. the
engine refused its prompt) becomes one; every row that comes in goes out.

Every program is also run with the other executor semantics (`strict` / `reference`, see `executor`), and a row
records whether that reading would have decided its document differently (`*_semantics_differs`): at doc level a
different keep/drop, at chunk level a different output text.
"""

from __future__ import annotations

import time

import pyarrow as pa

from rayflow.data.prox.executor import (
    DEFAULT_EXECUTOR,
    ExecutorConfig,
    execute_chunk_program,
    execute_doc_program,
)
from rayflow.data.prox.generator import ProgramGenerator
from rayflow.data.prox.reader import READ_SCHEMA
from rayflow.llm import Engine, EngineConfig

# Every row carries every column, so error-only batches and good ones have the same Arrow schema.
STAGE_DEFAULTS = {
    "doc_program": "",
    "doc_keep": True,
    "doc_n_error_ops": 0,
    "doc_parse_failed": False,
    "doc_prompt_tokens": 0,
    "doc_truncated": False,
    "doc_s": 0.0,
    "doc_semantics_differs": False,
    "chunk_program": "",
    "refined": "",
    "kept": False,
    "n_error_ops": 0,
    "drop_reason": "",
    "fallback": False,
    "n_calls": 0,
    "n_unknown_calls": 0,
    "chunk_parse_failed": False,
    "n_chunks": 0,
    "chunk_prompt_tokens": 0,
    "chunk_truncated": False,
    "words_in": 0,
    "words_out": 0,
    "tokens_in": -1,
    "tokens_out": -1,
    "chunk_s": 0.0,
    "chunk_semantics_differs": False,
}
_TYPES = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}
ROW_SCHEMA = pa.schema(list(READ_SCHEMA) + [(k, _TYPES[type(v)]) for k, v in STAGE_DEFAULTS.items()])


class DocLevel:
    """Engine task: each document's doc program from the generator, executed (keep or drop)."""

    schema = ROW_SCHEMA

    def __init__(
        self,
        generator: ProgramGenerator,
        engine: EngineConfig | None,
        executor: ExecutorConfig = DEFAULT_EXECUTOR,
    ):
        self.generator = generator
        self.engine = engine
        self.executor = executor
        self.other = _other_semantics(executor)

    def __call__(self, rows: list[dict], engine: Engine | None) -> None:
        todo = _with_defaults(rows)
        if not todo:
            return
        start = time.perf_counter()
        generated = self.generator.doc_programs([r["text"] for r in todo], engine)
        for row, gen in zip(todo, generated):
            if gen.error is not None:
                _fail(row, "generation_failed", f"doc program: {gen.error}")
                continue
            result = execute_doc_program(gen.program, self.executor)
            row.update(
                doc_semantics_differs=execute_doc_program(gen.program, self.other).keep != result.keep,
                doc_program=gen.program,
                doc_keep=result.keep,
                doc_n_error_ops=result.n_error_ops,
                doc_parse_failed=result.parse_failed,
                doc_prompt_tokens=gen.prompt_tokens,
                doc_truncated=gen.truncated,
            )
        per_row = (time.perf_counter() - start) / len(todo)
        for row in todo:
            row["doc_s"] = per_row


class ChunkLevel:
    """Engine task: chunk programs for the documents the doc level kept (split into chunks and merged back
    inside this one call: no shuffle), executed; then the tokens in and out of every refined document."""

    schema = ROW_SCHEMA

    def __init__(self, generator: ProgramGenerator, engine: EngineConfig | None, executor: ExecutorConfig):
        self.generator = generator
        self.engine = engine
        self.executor = executor
        self.other = _other_semantics(executor)

    def __call__(self, rows: list[dict], engine: Engine | None) -> None:
        todo = _with_defaults(rows)
        for row in todo:
            if not row["doc_keep"]:
                row["drop_reason"] = "doc"
                row["words_in"] = len(row["text"].split())
        self._chunk([r for r in todo if r["doc_keep"]], engine)
        # Doc-dropped documents count too: their tokens are in and none are out.
        self._count_tokens([r for r in todo if r["error"] is None], engine)

    def _chunk(self, rows: list[dict], engine: Engine | None) -> None:
        if not rows:
            return
        start = time.perf_counter()
        generated = self.generator.chunk_programs([r["text"] for r in rows], engine)
        for row, gen in zip(rows, generated):
            if gen.error is not None:
                _fail(row, "generation_failed", f"chunk program: {gen.error}")
                continue
            result = execute_chunk_program(row["text"], gen.program, self.executor)
            other = execute_chunk_program(row["text"], gen.program, self.other)
            row.update(
                chunk_semantics_differs=other.text != result.text,
                chunk_program=gen.program,
                refined=result.text,
                kept=result.kept,
                n_error_ops=result.n_error_ops,
                drop_reason=result.drop_reason or "",
                fallback=result.fallback,
                n_calls=result.n_calls,
                n_unknown_calls=result.n_unknown_calls,
                chunk_parse_failed=result.n_calls == 0,  # empty, or not one valid call
                n_chunks=gen.n_prompts,
                chunk_prompt_tokens=gen.prompt_tokens,
                chunk_truncated=gen.truncated,
                words_in=result.words_in,
                words_out=result.words_out if result.kept else 0,
            )
        per_row = (time.perf_counter() - start) / len(rows)
        for row in rows:
            row["chunk_s"] = per_row

    def _count_tokens(self, rows: list[dict], engine: Engine | None) -> None:
        """Tokens in and out per row (`tokens_*` stay -1 when the generator has no tokenizer)."""
        tokens_in = self.generator.count_tokens([r["text"] for r in rows], engine) if rows else None
        if tokens_in is None:
            return
        kept = [r for r in rows if r["kept"]]
        refined = self.generator.count_tokens([r["refined"] for r in kept], engine) if kept else []
        tokens_out = dict(zip(map(id, kept), refined))
        for row, n_in in zip(rows, tokens_in):
            row["tokens_in"], row["tokens_out"] = n_in, tokens_out.get(id(row), 0)


def _other_semantics(executor: ExecutorConfig) -> ExecutorConfig:
    """`executor` with the other reading (strict <-> reference), for counting the documents it decides otherwise."""
    other = "reference" if executor.semantics == "strict" else "strict"
    return executor.model_copy(update={"semantics": other})


def _with_defaults(rows: list[dict]) -> list[dict]:
    """Give every row every stage column; returns the rows still to refine (not error records)."""
    for row in rows:
        for key, value in STAGE_DEFAULTS.items():
            row.setdefault(key, value)
    return [r for r in rows if r["error"] is None]


def _fail(row: dict, kind: str, reason: str) -> None:
    row.update(error=kind, reason=f"row {row['row']}: {reason}", raw=row["text"][:300])
