"""A 1F1B pipeline event simulator: per-stage, per-micro-batch times in, step makespan and memory out.

Stage s of P runs min(P - s - 1, m) warm-up forwards, then alternates one forward and one backward, then
drains the remaining backwards (the non-interleaved 1F1B schedule of PipeDream-Flush, Megatron and
DeepSpeed). A forward of micro-batch j on stage s waits for that micro-batch's forward on stage s - 1,
a backward for its backward on stage s + 1; each stage runs one op at a time. Bubbles therefore come
out of the simulation rather than a formula: with uniform stages the makespan is (m + P - 1) * (f + b),
and any imbalance between stages or micro-batches shows up as extra waiting.

Stage s holds the saved activations of every micro-batch whose forward has run and whose backward has
not; the peak of that sum is reported per stage (at most min(P - s, m) micro-batches in flight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PipelineRun", "one_f_one_b", "simulate_1f1b"]


@dataclass(frozen=True)
class PipelineRun:
    """Makespan (seconds), per-stage busy seconds [P], peak in-flight activation bytes [P], bubble share."""

    makespan: float
    busy: np.ndarray
    peak_act: np.ndarray

    @property
    def bubble(self) -> float:
        """Share of stage-time spent idle: 1 - sum(busy) / (P * makespan)."""
        return float(1.0 - self.busy.sum() / (len(self.busy) * self.makespan)) if self.makespan > 0 else 0.0


def one_f_one_b(stage: int, stages: int, micro: int) -> list[tuple[str, int]]:
    """The op order of ``stage``: ("F"|"B", micro-batch) pairs."""
    warm = min(stages - stage - 1, micro)
    ops = [("F", j) for j in range(warm)]
    for i in range(micro - warm):
        ops += [("F", warm + i), ("B", i)]
    ops += [("B", j) for j in range(micro - warm, micro)]
    return ops


def simulate_1f1b(
    fwd: np.ndarray, bwd: np.ndarray, act: np.ndarray | None = None, *, comm: float = 0.0
) -> PipelineRun:
    """Simulate one step. ``fwd``/``bwd``: [P, m] seconds; ``act``: [P, m] saved bytes; ``comm``: seconds per hop."""
    fwd, bwd = np.asarray(fwd, dtype=np.float64), np.asarray(bwd, dtype=np.float64)
    stages, micro = fwd.shape
    act = np.zeros_like(fwd) if act is None else np.asarray(act, dtype=np.float64)
    ops = [one_f_one_b(s, stages, micro) for s in range(stages)]
    # Plain lists: this loop runs thousands of times inside the partition search, and numpy scalar
    # indexing would dominate it.
    f_t, b_t, a_t = fwd.tolist(), bwd.tolist(), act.tolist()
    f_end: list[list[float | None]] = [[None] * micro for _ in range(stages)]
    b_end: list[list[float | None]] = [[None] * micro for _ in range(stages)]
    clock = [0.0] * stages
    ptr = [0] * stages
    live = [0.0] * stages
    peak = [0.0] * stages
    remaining = 2 * stages * micro
    while remaining:
        progressed = False
        for s in range(stages):
            ops_s, n_ops = ops[s], len(ops[s])
            while ptr[s] < n_ops:
                kind, j = ops_s[ptr[s]]
                if kind == "F":
                    dep = 0.0 if s == 0 else f_end[s - 1][j]
                    hop = comm if s > 0 else 0.0
                else:
                    dep = f_end[s][j] if s == stages - 1 else b_end[s + 1][j]
                    hop = comm if s < stages - 1 else 0.0
                if dep is None:
                    break  # the producer has not run yet; another stage must move first
                start = max(clock[s], dep + hop)
                if kind == "F":
                    clock[s] = f_end[s][j] = start + f_t[s][j]
                    live[s] += a_t[s][j]
                    peak[s] = max(peak[s], live[s])
                else:
                    clock[s] = b_end[s][j] = start + b_t[s][j]
                    live[s] -= a_t[s][j]
                ptr[s] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError("1F1B schedule deadlocked; op orders are inconsistent")
    return PipelineRun(makespan=max(clock), busy=fwd.sum(axis=1) + bwd.sum(axis=1), peak_act=np.asarray(peak))
