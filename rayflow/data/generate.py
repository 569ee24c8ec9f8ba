"""Batch generation over Ray Data: JSONL prompts -> the engine stage -> Parquet.

Each input line is one JSON object with a `prompt` (a string or a list of chat messages) and an optional
`id`. Lines are parsed in the engine stage rather than by Ray's JSON reader so that one malformed line becomes
an error record instead of failing the read, and a prompt the engine refuses (e.g. longer than its context)
becomes one too: every input line ends up either in `generations/` or in `errors/`.

The parsing and the engine task are plain Python; only `run` touches Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, engine_map, generate_rows
from rayflow.jsonl import loads_object
from rayflow.llm import Engine, EngineConfig, PromptRejected, SamplingParams
from rayflow.workflow import Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)
ERROR_PREVIEW_CHARS = 500


class GenerateConfig(Config):
    """Batch generation job: prompts in, generations out."""

    input: str = Field("examples/prompts.jsonl", description="JSONL file or directory of JSONL files")
    output_dir: str = Field(
        "outputs/generate", description="where generations/, errors/, summary.json, run.json go"
    )
    engine: EngineConfig = EngineConfig(backend="vllm", model="tiny:tiny", dtype="float32", max_model_len=512)
    sampling: SamplingParams = SamplingParams(max_tokens=32)
    stage: StageConfig = StageConfig()


def parse_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one JSONL line into `{"id", "prompt"}` (prompt JSON-encoded if it is a chat) or an error reason."""
    obj, error = loads_object(line)
    if obj is None:
        return None, error
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            return None, "field 'prompt' is empty"
    elif isinstance(prompt, list):
        if not prompt or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt
        ):
            return (
                None,
                "field 'prompt' must be a string or a non-empty list of {role, content} string messages",
            )
        prompt = json.dumps(prompt, ensure_ascii=False)
    elif prompt is None:
        return None, "missing field 'prompt'"
    else:
        return None, f"field 'prompt' must be a string or a list of messages, got {type(prompt).__name__}"
    # A stable id for rows without one: the same line always gets the same id across reruns.
    row_id = obj.get("id")
    row_id = str(row_id) if row_id is not None else hashlib.sha1(line.encode()).hexdigest()[:16]
    is_chat = isinstance(obj["prompt"], list)
    return {"id": row_id, "prompt": prompt, "is_chat": is_chat}, None


OUTPUT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("is_chat", pa.bool_()),
        ("generated_text", pa.string()),
        ("finish_reason", pa.string()),
        ("num_generated_tokens", pa.int64()),
        ("error", pa.string()),
        ("raw", pa.string()),
    ]
)


class GenerateTask:
    """Engine task: JSONL lines (`text`) in, one output row each: its generation, or an error record."""

    schema = OUTPUT_SCHEMA

    def __init__(self, engine: EngineConfig, sampling: SamplingParams):
        self.engine = engine
        self.sampling = sampling

    def __call__(self, rows: list[dict[str, Any]], engine: Engine) -> None:
        lines = [row.pop("text") for row in rows]
        parsed = [parse_line(line) for line in lines]
        prompts = [[json.loads(f["prompt"]) if f["is_chat"] else f["prompt"]] if f else [] for f, _ in parsed]
        for row, line, (fields, reason), result in zip(
            rows, lines, parsed, generate_rows(engine, prompts, self.sampling)
        ):
            if fields is None:
                row.update(_error_row(line, reason))
            elif isinstance(result, PromptRejected):
                row.update(_error_row(line, f"engine rejected the prompt: {result.reason}"))
            else:
                gen = result[0]
                row.update(fields, generated_text=gen.text, finish_reason=gen.finish_reason,
                           num_generated_tokens=len(gen.token_ids), error=None, raw=None)  # fmt: skip


def _error_row(line: str, reason: str) -> dict[str, Any]:
    empty = {"id": None, "prompt": None, "is_chat": False, "generated_text": None, "finish_reason": None}
    return {**empty, "num_generated_tokens": 0, "error": reason, "raw": line[:ERROR_PREVIEW_CHARS]}


def check(cfg: GenerateConfig) -> None:
    """The input and the model exist (before Ray starts or a model loads)."""
    require_path(cfg.input, "input")
    require_model(cfg.engine.model, "engine.model")


def run(cfg: GenerateConfig) -> Result:
    """Generate for every input line on the current Ray cluster; writes generations/ and errors/ (Parquet),
    summary.json (row counts) and run.json under `cfg.output_dir`. A rerun replaces the outputs."""
    import ray

    check(cfg)
    out = Path(cfg.output_dir)
    with Workflow("generate", cfg, out) as wf:
        with wf.phase("generate"):
            log.info(
                "generating for %s with %s on %d engine actor(s)",
                cfg.input,
                cfg.engine.model,
                cfg.stage.actors,
            )
            ds = ray.data.read_text(cfg.input).filter(lambda row: bool(row["text"].strip()))
            ds = engine_map(ds, [GenerateTask(cfg.engine, cfg.sampling)], cfg.stage).materialize()
        with wf.phase("write"):
            # Generation ran once above; both outputs read the materialised blocks.
            ok = ds.filter(lambda row: row["error"] is None).drop_columns(["error", "raw"])
            bad = ds.filter(lambda row: row["error"] is not None).select_columns(["error", "raw"])
            n_ok, n_bad = ok.count(), bad.count()
            for sub, name, n in ((ok, "generations", n_ok), (bad, "errors", n_bad)):
                target = out / name
                if target.exists():
                    # Ray's Parquet writer adds files next to old ones; a rerun must replace, not append.
                    for f in target.glob("*.parquet"):
                        f.unlink()
                if n:
                    sub.write_parquet(str(target.resolve()))
        summary = {"rows_in": n_ok + n_bad, "generated": n_ok, "errors": n_bad}
        return wf.finish(
            summary, f"generated {n_ok} of {n_ok + n_bad} rows ({n_bad} errors) -> {out.resolve()}"
        )
