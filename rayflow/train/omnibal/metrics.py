"""Balance metrics. The pad and Dist ratios follow OmniBal's reference code (ModelTC/OmniBal,
``test_balanced_dynamic_batch.py::get_pad_dist_ratio``); rayflow adds a per-step Dist and step max/mean.

- **Pad ratio**: total padding over total tokens of the padded tensors, sum_b sum_i (max_b - l_i) /
  sum_b (max_b * B_b), over every micro-batch b of every rank (not a mean of per-batch ratios, which would
  weigh a short batch as much as a long one). A packed group is one sequence and has no padding.
- **Dist ratio** of one iteration over D data-parallel ranks with loads X_d: sum_d(max X - X_d) / (D * max X),
  the share of device time spent waiting for the busiest rank if time were proportional to X; averaged over
  iterations. The reference's iteration is one micro-batch on every rank; its LLM load is the micro-batch's
  padded length (what the rank computes), its vision load the tiles. An iteration in which no rank has any
  tiles has Dist 0 and counts in the mean (the reference divides by max(max X * D, 1)); ``idle="skip"``
  leaves such iterations out instead.
- **Step max/mean**: per step, the busiest rank's cost over the mean rank cost (1.0 is perfect balance);
  averaged over steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

__all__ = ["dist_ratio", "max_mean", "pad_ratio"]


def pad_ratio(batches: Iterable[Iterable[int]]) -> float:
    """Total pad tokens / total tokens over padded micro-batches, each given as its samples' lengths (tokens)."""
    pad = total = 0.0
    for lengths in batches:
        arr = np.asarray(list(lengths), dtype=np.float64)
        if arr.size == 0:
            continue
        pad += float((arr.max() - arr).sum())
        total += float(arr.max() * arr.size)
    return pad / total if total > 0 else 0.0


def dist_ratio(loads: np.ndarray, *, idle: Literal["count", "skip"] = "count") -> float:
    """Mean Dist ratio; ``loads`` is [iterations, ranks] (tiles or tokens per rank per iteration).

    ``idle="count"`` (the reference's): an iteration where every rank's load is 0 has Dist 0 and is averaged
    in; ``"skip"`` leaves it out of the mean.
    """
    loads = np.asarray(loads, dtype=np.float64)
    if loads.shape[0] == 0:
        return 0.0
    peak = loads.max(axis=1)
    waste = (peak[:, None] - loads).sum(axis=1)
    busy = peak > 0
    per_iter = np.where(busy, waste / (loads.shape[1] * np.where(busy, peak, 1.0)), 0.0)
    if idle == "skip":
        per_iter = per_iter[busy]
    return float(per_iter.mean()) if per_iter.size else 0.0


def max_mean(costs: np.ndarray) -> float:
    """Mean over steps of max-rank cost / mean-rank cost; ``costs`` is [steps, ranks]."""
    costs = np.asarray(costs, dtype=np.float64)
    mean = costs.mean(axis=1)
    valid = mean > 0
    return float((costs.max(axis=1)[valid] / mean[valid]).mean()) if valid.any() else 1.0
