"""The record of one assistant run: every step, in order, with what it decided and how long it took.

A listener (the Serve app's event stream) hears each step as it is recorded, so a page can show the flow
while it runs; the finished trace is returned with the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field


class TraceStep(BaseModel):
    """One step: `name` (route, clarify, rewrite, decompose, metadata, retrieve, rerank, filter, sub_answer,
    answer, citations, critique, refine), `ms` (wall time), what it produced (`detail`), and, for steps that ask
    the model, the prompt version and whether its reply was usable (`parsed`: False = fell back to a default)."""

    name: str
    ms: float
    detail: dict[str, Any] = Field(default_factory=dict)
    prompt_version: str | None = None
    parsed: bool | None = None
    error: str | None = None


class Trace:
    """Steps in the order they finished; `listener(step)` is called on each as it is recorded."""

    def __init__(self, listener: Callable[[TraceStep], None] | None = None):
        self.steps: list[TraceStep] = []
        self.listener = listener

    def start(self) -> float:
        return time.perf_counter()

    def record(self, name: str, started: float, **fields: Any) -> TraceStep:
        """Record step `name` begun at `started` (from `start()`); `fields` are TraceStep's other fields."""
        step = TraceStep(name=name, ms=round((time.perf_counter() - started) * 1000, 2), **fields)
        self.steps.append(step)
        if self.listener is not None:
            self.listener(step)
        return step

    def dump(self) -> list[dict]:
        return [s.model_dump() for s in self.steps]
