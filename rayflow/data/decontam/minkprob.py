"""Min-K% Prob (Shi et al., 2023): a model-based sign that a model saw an example in training.

The example is scored through the engine layer (`Engine.score`) right after the model's BOS token (EOS when the
tokenizer has none): the score is the mean negative log-probability of its lowest-probability k% of tokens (at
least one). Text a model has memorised has few surprising tokens, so a low value (<= `threshold`, nats) marks
the example suspected. Reported beside the n-gram verdicts, never mixed into them. Runs on the one Ray Data
engine stage (`MinKTask`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyarrow as pa
from pydantic import Field

from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, score_rows
from rayflow.llm import Engine, EngineConfig, PromptRejected

SCHEMA = pa.schema(
    [
        ("key", pa.int64()),
        ("text", pa.string()),
        ("min_k_nll", pa.float64()),
        ("min_k_tokens", pa.int64()),
        ("error", pa.string()),
    ]
)


class MinKConfig(Config):
    """The model-based check: which model, k, and the threshold that marks an example suspected."""

    engine: EngineConfig = EngineConfig(backend="hf", model="tiny:tiny", dtype="float32")
    k: float = Field(0.2, gt=0, le=1, description="share of lowest-probability tokens averaged")
    threshold: float = Field(
        3.0, description="suspected when the Min-K% negative log-probability is <= this (nats)"
    )
    source_name: str | None = Field(None, description="the model's name in evidence rows; None = engine.model")
    stage: StageConfig = Field(StageConfig(cpus_per_actor=0.5, batch_size=16), description="scoring actor pool")


def min_k_nll(logprobs: Sequence[float], k: float) -> float:
    """Mean negative log-probability (nats) of the lowest `k` share of `logprobs` (at least one token)."""
    if not logprobs:
        raise ValueError("min_k_nll needs at least one token log-prob")
    lowest = sorted(logprobs)[: max(1, math.floor(len(logprobs) * k))]
    return -sum(lowest) / len(lowest)


class MinKTask:
    """Engine task: each row's `text` scored after `start_token`; fills `min_k_nll`, `min_k_tokens`, or `error`
    for an example the engine refused (e.g. longer than the context)."""

    schema = SCHEMA

    def __init__(self, engine: EngineConfig, k: float, start_token: int):
        self.engine = engine
        self.k = k
        self.start_token = start_token

    def __call__(self, rows: list[dict], engine: Engine | None) -> None:
        results = score_rows(engine, [[([self.start_token], r["text"])] for r in rows])
        for row, result in zip(rows, results):
            row.update(min_k_nll=None, min_k_tokens=None, error=None)
            if isinstance(result, PromptRejected):
                row["error"] = result.reason
            elif not result[0].logprobs:
                row["error"] = "the example has no tokens"
            else:
                row["min_k_nll"] = min_k_nll(result[0].logprobs, self.k)
                row["min_k_tokens"] = len(result[0].logprobs)
