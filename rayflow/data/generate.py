"""Batch generation over Ray Data: JSONL prompts -> engine actors -> Parquet.

Each input line is one JSON object with a `prompt` (a string or a list of chat messages) and an optional
`id`. Lines are parsed here rather than by Ray's JSON reader so that one malformed line becomes an error
record instead of failing the read: every input line ends up either in `generations/` or in `errors/`.

The parsing and the batch function are plain Python; only `run_generate` touches Ray.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from rayflow.config import Config
from rayflow.jsonl import loads_object
from rayflow.llm import EngineConfig, SamplingParams, build_engine

ERROR_PREVIEW_CHARS = 500


class GenerateConfig(Config):
    """Batch generation job: prompts in, generations out."""

    input: str = Field("examples/prompts.jsonl", description="JSONL file or directory of JSONL files")
    output_dir: str = Field("outputs/generate", description="where generations/, errors/, run.json go")
    engine: EngineConfig = EngineConfig(backend="vllm", model="tiny:tiny", dtype="float32", max_model_len=512)
    sampling: SamplingParams = SamplingParams(max_tokens=32)
    batch_size: int = Field(64, ge=1, description="prompts per engine call")
    num_engines: int = Field(1, ge=1, description="engine actors (one model replica each)")
    cpus_per_engine: float = Field(1.0, gt=0)
    gpus_per_engine: float = Field(0.0, ge=0)


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
            return None, "field 'prompt' must be a string or a non-empty list of {role, content} string messages"
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


class GenerateBatch:
    """Ray Data batch function holding one engine: text lines in, generations or error records out."""

    def __init__(self, engine: dict, sampling: dict):
        self.engine = build_engine(EngineConfig(**engine))
        self.sampling = SamplingParams(**sampling)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows, out = [], []
        for line in batch["text"]:
            parsed, reason = parse_line(line)
            if parsed is None:
                out.append(_error_row(line, reason))
            else:
                rows.append((line, parsed))
        prompts = [json.loads(r["prompt"]) if r["is_chat"] else r["prompt"] for _, r in rows]
        try:
            gens = self.engine.generate(prompts, self.sampling)
        except ValueError:
            # One prompt the engine rejects (e.g. too long) must not cost the whole batch: retry one by one.
            gens = [self._generate_one(p) for p in prompts]
        for (line, row), gen in zip(rows, gens):
            if isinstance(gen, str):
                out.append(_error_row(line, gen))
            else:
                out.append(
                    {
                        **row,
                        "generated_text": gen.text,
                        "finish_reason": gen.finish_reason,
                        "num_generated_tokens": len(gen.token_ids),
                        "error": None,
                        "raw": None,
                    }
                )
        return pd.DataFrame(out, columns=OUTPUT_COLUMNS)

    def _generate_one(self, prompt):
        try:
            return self.engine.generate([prompt], self.sampling)[0]
        except ValueError as err:
            return f"engine rejected the prompt: {err}"


OUTPUT_COLUMNS = ["id", "prompt", "is_chat", "generated_text", "finish_reason", "num_generated_tokens", "error", "raw"]


def _error_row(line: str, reason: str) -> dict[str, Any]:
    # Every column gets a value of its own type so error-only batches convert to the same Arrow schema.
    empty = {"id": None, "prompt": None, "is_chat": False, "generated_text": None, "finish_reason": None}
    return {**empty, "num_generated_tokens": 0, "error": reason, "raw": line[:ERROR_PREVIEW_CHARS]}


def run_generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Run the pipeline on the current Ray cluster; returns counts. Writes Parquet under `cfg.output_dir`."""
    import ray

    input_path = Path(cfg.input)
    if not input_path.exists():
        raise FileNotFoundError(f"input {cfg.input!r} does not exist")
    out = Path(cfg.output_dir)
    ds = ray.data.read_text(str(input_path)).filter(lambda row: bool(row["text"].strip()))
    ds = ds.map_batches(
        GenerateBatch,
        fn_constructor_kwargs={"engine": cfg.engine.model_dump(), "sampling": cfg.sampling.model_dump()},
        batch_size=cfg.batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_engines),
        num_cpus=cfg.cpus_per_engine,
        num_gpus=cfg.gpus_per_engine or None,
    ).materialize()  # generation runs once; both outputs below read the materialised blocks
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
            sub.write_parquet(str(target))
    return {"rows_in": n_ok + n_bad, "generated": n_ok, "errors": n_bad}
