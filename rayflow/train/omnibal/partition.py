"""Pipeline stage partition: DeepSpeed's baselines and OmniBal's search.

A partition is DeepSpeed's ``parts`` list: P + 1 increasing layer indices from 0 to L, stage s owning
layers ``parts[s]:parts[s+1]``. Splitting by parameter count (DeepSpeed's default) or by layer count
mis-balances a vision-language model, because ViT layers are small in parameters but run on every
tile's ~1K patches while LLM layers run on tokens.

The search scores a candidate by what it costs: for each stage, the recompute planner picks the least
recomputation that fits the memory budget (a stage that cannot fit even with full recompute rules the
candidate out), the recompute time is added to the backward, and the 1F1B simulator runs the given
micro-batch workloads. Candidates are

1. every partition, when there are at most ``max_exhaustive`` of them;
2. otherwise the min-max anchor (contiguous split minimising the slowest stage's mean fwd+bwd time, by
   dynamic programming) and its neighbourhood: every joint shift of the P - 1 cuts by up to ``radius``
   layers when that window is small, else a hill climb over single-cut shifts of 1..``radius`` layers.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from rayflow.train.omnibal.costmodel import CostProfile, LayerCosts
from rayflow.train.omnibal.recompute import StagePlan, plan_stage, recompute_seconds
from rayflow.train.omnibal.schedule import EpochSchedule, GroupWork
from rayflow.train.omnibal.simulator import simulate_1f1b

__all__ = [
    "Evaluation",
    "MemorySpec",
    "PartitionSearch",
    "evaluate_partition",
    "minmax_partition",
    "parameters_partition",
    "search_partition",
    "simulate_schedule",
    "uniform_partition",
]


@dataclass(frozen=True)
class MemorySpec:
    """Device memory: ``budget`` bytes; ``bound``: the largest micro-batch to size activations for."""

    budget: float
    bound: GroupWork  # one group (arrays of length 1), e.g. Q_v tiles and Q_t tokens


@dataclass(frozen=True)
class Evaluation:
    """A scored partition: mean simulated step seconds over the workloads, stage plans, feasibility."""

    parts: tuple[int, ...]
    step_seconds: float
    plans: tuple[StagePlan, ...]
    feasible: bool
    bubble: float


@dataclass
class PartitionSearch:
    """The search's answer and how it got there."""

    best: Evaluation
    anchor: tuple[int, ...]
    method: str
    evaluated: int
    seconds: float
    history: list[Evaluation] = field(default_factory=list)


def minmax_partition(weights: np.ndarray, stages: int) -> tuple[int, ...]:
    """Contiguous split of ``weights`` [L] into ``stages`` non-empty parts minimising the largest part sum."""
    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    if not 1 <= stages <= n:
        raise ValueError(f"cannot split {n} layers into {stages} non-empty stages")
    prefix = np.concatenate([[0.0], np.cumsum(w)])
    # best[k][i]: min over splits of the first i layers into k parts of the largest part; cut[k][i]: last cut.
    best = np.full((stages + 1, n + 1), np.inf)
    cut = np.zeros((stages + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            j = np.arange(k - 1, i)
            cand = np.maximum(best[k - 1, j], prefix[i] - prefix[j])
            pick = int(np.argmin(cand))
            best[k, i], cut[k, i] = cand[pick], j[pick]
    parts = [n]
    for k in range(stages, 0, -1):
        parts.append(int(cut[k, parts[-1]]))
    return tuple(reversed(parts))


def parameters_partition(profile: CostProfile, stages: int) -> tuple[int, ...]:
    """Balance parameter counts, as DeepSpeed's ``partition_method="parameters"`` does."""
    return minmax_partition(profile.params, stages)


def uniform_partition(layers: int, stages: int) -> tuple[int, ...]:
    """Equal layer counts (the first ``layers % stages`` stages one larger), like ``partition_method="uniform"``."""
    base, extra = divmod(layers, stages)
    parts = [0]
    for s in range(stages):
        parts.append(parts[-1] + base + (1 if s < extra else 0))
    return tuple(parts)


class _Scorer:
    """Scores partitions, caching stage plans (a stage's plan depends only on its layers and position)."""

    def __init__(
        self,
        profile: CostProfile,
        stages: int,
        workloads: list[GroupWork],
        memory: MemorySpec | None,
        recompute: str,
    ) -> None:
        self.profile, self.stages, self.memory, self.recompute = profile, stages, memory, recompute
        self.costs: list[LayerCosts] = [profile.costs(w) for w in workloads]
        self.micro = max(len(w.tiles) for w in workloads)
        self.bound = profile.costs(memory.bound) if memory else None
        self.params = profile.params
        self.plans: dict[tuple[int, int, int], StagePlan] = {}
        self.evaluated = 0

    def plan(self, s: int, lo: int, hi: int) -> StagePlan:
        key = (s, lo, hi)
        if key not in self.plans:
            if self.memory is None:
                mode = "none" if self.recompute == "plan" else self.recompute
                self.plans[key] = StagePlan((mode,) * (hi - lo), 0.0, True, 0.0)
            else:
                b, layer = self.bound, slice(lo, hi)
                self.plans[key] = plan_stage(
                    fwd=b.fwd[layer, 0],
                    act={m: a[layer, 0] for m, a in b.act.items()},
                    selective_frac=b.selective_frac[layer],
                    params=self.params[layer],
                    inflight=min(self.stages - s, self.micro),
                    budget=self.memory.budget,
                    state_bytes_per_param=self.profile.state_bytes_per_param,
                    policy=self.recompute,
                )
        return self.plans[key]

    def __call__(self, parts: tuple[int, ...]) -> Evaluation:
        self.evaluated += 1
        plans = tuple(self.plan(s, parts[s], parts[s + 1]) for s in range(self.stages))
        total, bubble = 0.0, 0.0
        for c in self.costs:
            fwd = np.stack([c.fwd[parts[s] : parts[s + 1]].sum(axis=0) for s in range(self.stages)])
            bwd = np.stack(
                [
                    c.bwd[parts[s] : parts[s + 1]].sum(axis=0)
                    + recompute_seconds(
                        plans[s].modes,
                        c.fwd[parts[s] : parts[s + 1]],
                        c.selective_frac[parts[s] : parts[s + 1]],
                    )
                    for s in range(self.stages)
                ]
            )
            run = simulate_1f1b(fwd, bwd)
            total += run.makespan
            bubble += run.bubble
        n = len(self.costs)
        return Evaluation(parts, total / n, plans, all(p.fits for p in plans), bubble / n)


def evaluate_partition(
    profile: CostProfile,
    parts: tuple[int, ...],
    workloads: list[GroupWork],
    memory: MemorySpec | None = None,
    recompute: str = "plan",
) -> Evaluation:
    """Score one partition. ``workloads``: one rank's step each (G micro-batches, in order).

    ``recompute``: ``plan`` (per-stage planner), ``full`` (every layer recomputed, the global policy) or
    ``none``.
    """
    return _Scorer(profile, len(parts) - 1, workloads, memory, recompute)(tuple(parts))


def _better(a: Evaluation, b: Evaluation | None) -> bool:
    if b is None:
        return True
    if a.feasible != b.feasible:
        return a.feasible
    return a.step_seconds < b.step_seconds * (1 - 1e-12)


def search_partition(
    profile: CostProfile,
    stages: int,
    workloads: list[GroupWork],
    memory: MemorySpec | None = None,
    *,
    radius: int = 2,
    max_exhaustive: int = 3000,
    max_window: int = 3000,
) -> PartitionSearch:
    """Find stage boundaries minimising the simulated step time over ``workloads`` within ``memory``."""
    t0 = time.perf_counter()
    n = len(profile.layers)
    score = _Scorer(profile, stages, workloads, memory, "plan")
    mean_layer = np.mean([(c.fwd + c.bwd).mean(axis=1) for c in score.costs], axis=0)
    anchor = minmax_partition(mean_layer, stages)
    best: Evaluation | None = None
    if math.comb(n - 1, stages - 1) <= max_exhaustive:
        method = "exhaustive"
        for cuts in itertools.combinations(range(1, n), stages - 1):
            ev = score((0, *cuts, n))
            best = ev if _better(ev, best) else best
    elif (2 * radius + 1) ** (stages - 1) <= max_window:
        method = "window"
        for shift in itertools.product(range(-radius, radius + 1), repeat=stages - 1):
            cuts = tuple(c + d for c, d in zip(anchor[1:-1], shift))
            if all(a < b for a, b in zip((0, *cuts), (*cuts, n))):
                ev = score((0, *cuts, n))
                best = ev if _better(ev, best) else best
    else:
        method = "hill_climb"
        best = score(anchor)
        improved = True
        while improved:
            improved = False
            for i in range(1, stages):
                for d in [d for r in range(1, radius + 1) for d in (-r, r)]:
                    parts = list(best.parts)
                    parts[i] += d
                    if parts[i - 1] < parts[i] < parts[i + 1]:
                        ev = score(tuple(parts))
                        if _better(ev, best):
                            best, improved = ev, True
    return PartitionSearch(
        best=best, anchor=anchor, method=method, evaluated=score.evaluated, seconds=time.perf_counter() - t0
    )


def simulate_schedule(
    profile: CostProfile,
    parts: tuple[int, ...],
    schedule: EpochSchedule,
    memory: MemorySpec | None = None,
    recompute: str = "plan",
) -> dict:
    """Simulate a whole epoch: every step's time is its slowest data-parallel rank's 1F1B makespan.

    Each rank runs its ``micro_per_step`` groups of the step as the pipeline's micro-batches. Returns
    epoch seconds, samples per second, mean step seconds, mean bubble and per-rank busy seconds
    [steps, ranks] (for load plots), plus the stage plans and whether they fit memory.
    """
    stages = len(parts) - 1
    scorer = _Scorer(profile, stages, [schedule.work.take(schedule.assignment[0, 0])], memory, recompute)
    plans = [scorer.plan(s, parts[s], parts[s + 1]) for s in range(stages)]
    c = profile.costs(schedule.work)  # [L, G] for every group of the epoch
    fwd = np.stack([c.fwd[parts[s] : parts[s + 1]].sum(axis=0) for s in range(stages)])  # [P, G]
    bwd = np.stack(
        [
            c.bwd[parts[s] : parts[s + 1]].sum(axis=0)
            + recompute_seconds(
                plans[s].modes, c.fwd[parts[s] : parts[s + 1]], c.selective_frac[parts[s] : parts[s + 1]]
            )
            for s in range(stages)
        ]
    )
    steps, ranks, _ = schedule.assignment.shape
    makespan = np.zeros((steps, ranks))
    bubble = np.zeros((steps, ranks))
    for t in range(steps):
        for r in range(ranks):
            ids = schedule.assignment[t, r]
            run = simulate_1f1b(fwd[:, ids], bwd[:, ids])
            makespan[t, r], bubble[t, r] = run.makespan, run.bubble
    step = makespan.max(axis=1)
    samples = sum(len(g) for g in schedule.grouping.groups)
    return {
        "epoch_seconds": float(step.sum()),
        "samples_per_second": float(samples / step.sum()),
        "mean_step_seconds": float(step.mean()),
        "mean_bubble": float(bubble.mean()),
        "rank_seconds": makespan,
        "fits_memory": all(p.fits for p in plans),
        "peak_bytes": [p.peak_bytes for p in plans],
        "recompute": [_mode_counts(p.modes) for p in plans],
    }


def _mode_counts(modes: tuple[str, ...]) -> dict[str, int]:
    return {m: modes.count(m) for m in ("none", "selective", "full") if modes.count(m)}
