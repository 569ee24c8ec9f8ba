"""Balance metrics, as OmniBal defines them.

- **Pad ratio** of a padded micro-batch of lengths l_1..l_B: sum(max - l_i) / (max * B), the share of
  the batch tensor that is padding; averaged over micro-batches. A packed group is one sequence: 0.
- **Dist ratio** of one step over D data-parallel ranks with loads X_d: sum_d(max X - X_d) / (D * max X),
  the share of the step's device time spent waiting for the busiest rank if time were proportional to X;
  averaged over steps. Computed for X = vision tiles and X = LLM tokens.
- **Step max/mean**: per step, the busiest rank's cost over the mean rank cost (1.0 is perfect balance);
  averaged over steps.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["dist_ratio", "max_mean", "pad_ratio"]


def pad_ratio(batches: Iterable[Iterable[int]]) -> float:
    """Mean pad ratio over micro-batches, each given as its samples' lengths (tokens)."""
    ratios = []
    for lengths in batches:
        arr = np.asarray(list(lengths), dtype=np.float64)
        if arr.size == 0 or arr.max() <= 0:
            continue
        ratios.append(float((arr.max() - arr).sum() / (arr.max() * arr.size)))
    return float(np.mean(ratios)) if ratios else 0.0


def dist_ratio(loads: np.ndarray) -> float:
    """Mean Dist ratio; ``loads`` is [steps, ranks] (tiles or tokens per rank per step)."""
    loads = np.asarray(loads, dtype=np.float64)
    peak = loads.max(axis=1)
    valid = peak > 0
    per_step = (peak[:, None] - loads).sum(axis=1)[valid] / (loads.shape[1] * peak[valid])
    return float(per_step.mean()) if per_step.size else 0.0


def max_mean(costs: np.ndarray) -> float:
    """Mean over steps of max-rank cost / mean-rank cost; ``costs`` is [steps, ranks]."""
    costs = np.asarray(costs, dtype=np.float64)
    mean = costs.mean(axis=1)
    valid = mean > 0
    return float((costs.max(axis=1)[valid] / mean[valid]).mean()) if valid.any() else 1.0
