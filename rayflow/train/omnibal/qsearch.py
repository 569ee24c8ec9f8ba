"""Automatic choice of the ISF budgets (Q_v, Q_t) for a dataset.

Q must be tuned per dataset: the repo's default (Q_v=9, Q_t=4096) balances worse than random batches on
data whose samples carry more tiles. Two searches; both keep the settings whose mean group size lies in
[samples_per_group, samples_per_group + 1] (OmniBal's rule) and evaluate on a seeded subsample for speed
(the chosen budgets apply to the full data).

- :func:`search_q` (rayflow's): a grid of budgets scaled from the data's mean tiles and tokens per sample
  (the closest settings when none is in range); lowest objective wins:

  - ``objective="dist"``: pad + dist_vit + dist_llm + dropped share (dropping data is a cost too);
  - ``objective="cost"``: step max/mean cost - 1 + dropped share, with the caller's cost function.

- :func:`search_q_linear` (the reference's ``search_arguments``): one dimension, Q_t = Q_v x tokens per
  tile, stepped one tile at a time from Q_t = 4096 until the groups' size is in range; lowest
  pad + dist_vit + dist_llm wins, measured as the reference does (one group per micro-batch, groups dealt
  at random, threshold Q_t - 128).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rayflow.train.omnibal.isf import ISFConfig
from rayflow.train.omnibal.schedule import BalanceConfig, CostFn, build_schedule, default_cost

__all__ = ["QSearchResult", "search_q", "search_q_by_source", "search_q_linear"]


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
    vit, tok = _subsample(vit, tok, max_samples, seed)
    target = samples_per_group + 0.5
    # Budgets at least the largest sample's (high quantile) so that few samples are over budget.
    v_lo = max(int(np.quantile(vit, 0.999)), round(0.8 * target * vit.mean()))
    t_lo = max(int(np.quantile(tok, 0.999)), round(0.8 * target * tok.mean()))
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


def search_q_linear(
    vit: np.ndarray,
    tok: np.ndarray,
    *,
    ranks: int,
    samples_per_group: int = 4,
    iterations: int = 50,
    q_t_start: int = 4096,
    margin: int = 128,
    max_evals: int = 40,
    max_samples: int = 20000,
    seed: int = 0,
) -> QSearchResult:
    """The reference's one-dimensional search over (Q_v, Q_t) for [N] ``vit`` tiles and ``tok`` tokens.

    Tokens per tile = ((mean tokens, each length rounded up to a multiple of 256) // mean tiles + 1) // 16 * 16
    (at least 16; the reference divides by it); start at Q_t = ``q_t_start``, Q_v = Q_t // tokens per tile,
    ``llm_thresh`` = Q_t - ``margin``. While no setting so far had a mean group size above
    ``samples_per_group`` + 1, step up one tile (and tokens per tile); after that, stop as soon as one setting
    was in range, else step down. Every setting is scored by pad + dist_vit + dist_llm (the reference's
    definitions, one group per micro-batch, groups dealt at random to ``ranks``). ``max_evals`` bounds the
    walk where the reference would loop on; with no setting in range the closest is taken.
    """
    vit, tok = _subsample(vit, tok, max_samples, seed)
    binned_tokens = float((np.ceil(tok / 256) * 256).mean())
    per_tile = max(16, int((binned_tokens // max(float(vit.mean()), 1.0) + 1) // 16 * 16))
    q_t, q_v = q_t_start, q_t_start // per_tile
    table: list[dict] = []
    largest = 0.0
    while len(table) < max_evals and q_v >= 1 and q_t >= 1:
        isf = ISFConfig(q_v=q_v, q_t=q_t, llm_thresh=max(1, q_t - margin), iterations=iterations)
        sched = build_schedule(
            vit,
            tok,
            BalanceConfig(isf=isf, dealing="random", seed=seed),
            ranks=ranks,
            micro_per_step=1,
            epoch=0,
        )
        rep = sched.report(tok)
        size = rep["mean_samples_per_group"]
        in_range = samples_per_group <= size <= samples_per_group + 1
        score = rep["pad"] + rep["dist_vit"] + rep["dist_llm"]
        table.append(
            {"q_v": q_v, "q_t": q_t, "llm_thresh": isf.thresh, "score": score, "in_range": in_range, **rep}
        )
        largest = max(largest, size)
        if largest > samples_per_group + 1:
            if any(r["in_range"] for r in table):
                break
            q_v, q_t = q_v - 1, q_t - per_tile
        else:
            q_v, q_t = q_v + 1, q_t + per_tile
    if not table:
        raise ValueError(
            f"q_t_start={q_t_start} gives no budget of at least one tile ({per_tile} tokens per tile)"
        )
    eligible = [r for r in table if r["in_range"]]
    if not eligible:
        target = samples_per_group + 0.5
        gap = min(abs(r["mean_samples_per_group"] - target) for r in table)
        eligible = [r for r in table if abs(r["mean_samples_per_group"] - target) <= gap]
    best = min(eligible, key=lambda r: (r["score"], r["q_v"], r["q_t"]))
    chosen = ISFConfig(q_v=best["q_v"], q_t=best["q_t"], llm_thresh=best["llm_thresh"], iterations=iterations)
    return QSearchResult(chosen, best, table)


def search_q_by_source(
    vit: np.ndarray, tok: np.ndarray, source: np.ndarray, *, linear: bool = False, **kwargs
) -> dict[str, ISFConfig]:
    """Budgets per data source (for ``BalanceConfig.isf_by_source`` with ``multi_group``), as the reference
    searches each source's length file apart. ``kwargs`` go to :func:`search_q` or :func:`search_q_linear`."""
    source = np.asarray(source).astype(str)
    search = search_q_linear if linear else search_q
    out = {}
    for name in np.unique(source).tolist():
        members = source == name
        out[name] = search(vit[members], tok[members], **kwargs).isf
    return out


def _subsample(
    vit: np.ndarray, tok: np.ndarray, max_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    vit, tok = np.asarray(vit, dtype=np.int64), np.asarray(tok, dtype=np.int64)
    if len(vit) > max_samples:
        pick = np.random.default_rng([seed, 7]).choice(len(vit), size=max_samples, replace=False)
        vit, tok = vit[pick], tok[pick]
    return vit, tok
