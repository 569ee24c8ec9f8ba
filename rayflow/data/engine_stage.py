"""The one Ray Data engine stage: every workflow that runs a model over a dataset does it through here.

    ds = engine_map(ds, [GenerateTask(engine_cfg, sampling)], StageConfig(actors=2, cpus_per_actor=1))

An `EngineStage` is a Ray Data actor. It builds the engine each of its tasks names once, when the actor
starts (tasks naming equal configs share one engine, so a fused two-level stage holds one model), and then
hands every batch, as a list of row dicts, to its tasks in order. A task is a plain object (`EngineTask`)
that fills each row's output columns; it asks the engine through `generate_rows` / `score_rows`, which make one
engine call for the whole batch and give each row its outputs back, or a `PromptRejected` when the engine
refused one of the row's prompts: the task writes that reason into the row's error column. Every row that comes
in goes out once, rejected or not. Tasks and the stage are plain Python: tests call them without Ray.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import pyarrow as pa
from pydantic import Field

from rayflow.config import Config
from rayflow.llm import (
    Completion,
    Engine,
    EngineConfig,
    Generation,
    Prompt,
    PromptRejected,
    SamplingParams,
    Scored,
    build_engine,
)


class StageConfig(Config):
    """The actor pool of one engine stage; every workflow configures its pool with this section."""

    actors: int = Field(1, ge=1, description="engine actors (one model replica each)")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per actor")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per actor: 1 = one replica per GPU, 0.5 = two")
    batch_size: int = Field(64, ge=1, description="rows per batch (one engine call per batch)")

    def map_args(self) -> dict[str, Any]:
        """`Dataset.map_batches` keyword arguments for an actor pool of this shape (pyarrow batches)."""
        import ray

        return {
            "batch_size": self.batch_size,
            "batch_format": "pyarrow",
            "compute": ray.data.ActorPoolStrategy(size=self.actors),
            "num_cpus": self.cpus_per_actor,
            "num_gpus": self.gpus_per_actor or None,
        }


class EngineTask(Protocol):
    """One workflow's use of the engine stage.

    `engine` names the model the task needs (None: it needs none, e.g. ProX's rules generator); `schema` is
    the Arrow schema of the rows it returns; calling it fills each row's output columns in place (rows are
    dicts; a row the engine refused gets the reason in the task's error column).
    """

    engine: EngineConfig | None
    schema: pa.Schema

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None: ...


class EngineStage:
    """Ray Data batch function holding the engines of its tasks: Arrow batch in, Arrow batch out."""

    def __init__(self, tasks: Sequence[EngineTask]):
        self.tasks = tuple(tasks)
        built: dict[str, Engine] = {}
        self.engines: list[Engine | None] = []
        for task in self.tasks:
            if task.engine is None:
                self.engines.append(None)
                continue
            key = task.engine.model_dump_json()
            if key not in built:
                built[key] = build_engine(task.engine)
            self.engines.append(built[key])

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        n_in = len(rows)
        for task, engine in zip(self.tasks, self.engines):
            task(rows, engine)
        if len(rows) != n_in:
            raise RuntimeError(f"an engine task returned {len(rows)} rows for {n_in}")
        return pa.Table.from_pylist(rows, schema=self.tasks[-1].schema)

    def close(self) -> None:
        """Close every engine this stage built (each once)."""
        for engine in {id(e): e for e in self.engines if e is not None}.values():
            engine.close()


def engine_map(ds, tasks: Sequence[EngineTask], stage: StageConfig):
    """`ds` through an actor pool of `EngineStage(tasks)` shaped by `stage`; returns the mapped dataset."""
    args = stage.map_args()
    if not stage.gpus_per_actor and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
        # On CPUs a vLLM engine's core in a process of its own overlaps nothing (the model runs on the cores
        # the actor has) and costs a second vLLM start: in the actor, tiny:tiny reaches its first batch in
        # 20 s and 21 CPU-s instead of 42 s and 44. The actor is the unit of failure here: Ray Data restarts it.
        args["runtime_env"] = {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}
    return ds.map_batches(EngineStage, fn_constructor_args=(tuple(tasks),), **args)


def generate_rows(
    engine: Engine, prompts: Sequence[Sequence[Prompt]], params: SamplingParams
) -> list[list[Generation] | PromptRejected]:
    """Generate every row's prompts in one engine call; per row, its generations in order, or the first
    `PromptRejected` among them (the row cannot be completed without all of its prompts)."""
    flat = [p for row in prompts for p in row]
    return _regroup(prompts, engine.generate(flat, params) if flat else [])


def score_rows(
    engine: Engine, pairs: Sequence[Sequence[tuple[Prompt, Completion]]]
) -> list[list[Scored] | PromptRejected]:
    """Score every row's (prompt, completion) pairs in one engine call; per row as in `generate_rows`."""
    flat = [pair for row in pairs for pair in row]
    outputs = engine.score([p for p, _ in flat], [c for _, c in flat]) if flat else []
    return _regroup(pairs, outputs)


def _regroup(per_row: Sequence[Sequence[Any]], outputs: Sequence[Any]) -> list:
    if len(outputs) != sum(len(row) for row in per_row):
        raise RuntimeError(f"the engine returned {len(outputs)} results for {sum(map(len, per_row))} prompts")
    results, at = [], 0
    for row in per_row:
        mine = list(outputs[at : at + len(row)])
        at += len(row)
        results.append(next((o for o in mine if isinstance(o, PromptRejected)), mine))
    return results
