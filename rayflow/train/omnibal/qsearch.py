"""Automatic choice of the ISF budgets (Q_v, Q_t) for a dataset.

Q must be tuned per dataset: the repo's default (Q_v=9, Q_t=4096) balances worse than random batches on
data whose samples carry more tiles. The search scans a grid of budgets scaled from the data's mean
tiles and tokens per sample so that groups hold about ``samples_per_group`` samples, keeps the settings
whose mean group size lies in [samples_per_group, samples_per_group + 1] (OmniBal's rule; the closest
settings when none does), and picks the one with the lowest objective:

- ``objective="dist"``: pad + dist_vit + dist_llm + dropped share (dropping data is a cost too);
- ``objective="cost"``: step max/mean cost - 1 + dropped share, with the caller's cost function.

Budgets are evaluated on a seeded subsample for speed; the chosen budgets apply to the full data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rayflow.train.omnibal.isf import ISFConfig
from rayflow.train.omnibal.schedule import BalanceConfig, CostFn, build_schedule, default_cost

__all__ = ["QSearchResult", "search_q"]


@dataclass(frozen=True)
class QSearchResult:
    """The chosen budgets, their report on the subsample, and every evaluated row."""

    isf: ISFConfig
    report: dict
    table: list[dict]


def search_q(
    vit: np.ndarray,
    tok: np.ndarray,
    *,
    ranks: int,
    micro_per_step: int = 1,
    samples_per_group: int = 4,
    objective: Literal["dist", "cost"] = "dist",
    cost: CostFn = default_cost,
    iterations: int = 20,
    grid: int = 6,
    max_samples: int = 20000,
    seed: int = 0,
) -> QSearchResult:
    """Search (Q_v, Q_t) for samples with [N] ``vit`` tiles and ``tok`` tokens; deterministic in ``seed``."""
    vit, tok = np.asarray(vit, dtype=np.int64), np.asarray(tok, dtype=np.int64)
    if len(vit) > max_samples:
        pick = np.random.default_rng([seed, 7]).choice(len(vit), size=max_samples, replace=False)
        vit, tok = vit[pick], tok[pick]
    target = samples_per_group + 0.5
    # Budgets at least the largest sample's (high quantile) so that few samples are over budget.
    v_lo = max(int(np.quantile(vit, 0.999)), int(round(0.8 * target * vit.mean())))
    t_lo = max(int(np.quantile(tok, 0.999)), int(round(0.8 * target * tok.mean())))
    v_grid = np.unique(
        np.round(np.linspace(v_lo, max(v_lo + 1, 1.5 * target * vit.mean()), grid)).astype(int)
    )
    t_grid = np.unique(
        np.round(np.linspace(t_lo, max(t_lo + 1, 1.5 * target * tok.mean()), grid)).astype(int)
    )

    table = []
    for q_v in v_grid.tolist():
        for q_t in t_grid.tolist():
            isf = ISFConfig(q_v=q_v, q_t=q_t, iterations=iterations)
            sched = build_schedule(
                vit,
                tok,
                BalanceConfig(isf=isf, seed=seed),
                ranks=ranks,
                micro_per_step=micro_per_step,
                epoch=0,
                cost=cost,
            )
            rep = sched.report(tok, cost)
            dropped = sum(rep["samples_dropped"].values()) / len(vit)
            if objective == "dist":
                score = rep["pad"] + rep["dist_vit"] + rep["dist_llm"] + dropped
            else:
                score = rep["max_mean"] - 1.0 + dropped
            in_range = samples_per_group <= rep["mean_samples_per_group"] <= samples_per_group + 1
            table.append({"q_v": q_v, "q_t": q_t, "score": score, "in_range": in_range, **rep})
    eligible = [r for r in table if r["in_range"]]
    if not eligible:
        gap = min(abs(r["mean_samples_per_group"] - target) for r in table)
        eligible = [r for r in table if abs(r["mean_samples_per_group"] - target) <= gap + 0.25]
    best = min(eligible, key=lambda r: (r["score"], r["q_t"], r["q_v"]))
    return QSearchResult(ISFConfig(q_v=best["q_v"], q_t=best["q_t"]), best, table)
