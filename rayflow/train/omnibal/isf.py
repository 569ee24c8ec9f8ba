"""ISF, Iterative Sampling and Filtering: pack samples into groups of about Q_v tiles and Q_t tokens.

Each group is one device micro-batch (a packed sequence), so every micro-batch on every rank carries
nearly the same vision and language work. One round shuffles the pool (seeded), packs it next-fit
(append while both budgets hold, close the group on overflow), keeps the groups that are full (tiles
exactly Q_v, or tokens at least ``llm_thresh``) and returns the rest to the pool; after ``iterations``
rounds the remaining pool is packed as it comes. A sample alone over either budget can never be placed
and is dropped.

Finally the group count is trimmed to a multiple of ``multiple_of`` (data-parallel ranks x micro-batches
per step) so every rank takes the same number of steps; the lightest groups go first, and their samples
are recorded as dropped. Each sample lands in at most one group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, model_validator

from rayflow.config import Config

__all__ = ["Grouping", "ISFConfig", "isf_groups", "random_batches"]


class ISFConfig(Config):
    """ISF budgets: the target work of one packed group."""

    q_v: int = Field(16, ge=1, description="vision tiles per group (Q_v)")
    q_t: int = Field(4096, ge=1, description="LLM tokens per group (Q_t)")
    llm_thresh: int | None = Field(
        None, ge=1, description="a group with at least this many tokens is full; default Q_t - Q_t/32"
    )
    iterations: int = Field(50, ge=0, description="sampling-and-filtering rounds")

    @model_validator(mode="after")
    def _thresh_within_budget(self) -> ISFConfig:
        if self.llm_thresh is not None and self.llm_thresh > self.q_t:
            raise ValueError(f"llm_thresh={self.llm_thresh} exceeds q_t={self.q_t}")
        return self

    @property
    def thresh(self) -> int:
        # The paper's default is Q_t - 128 at Q_t = 4096, i.e. 1/32 of the budget; relative, so that it
        # also means something for the small budgets of tiny CPU models.
        return self.llm_thresh if self.llm_thresh is not None else self.q_t - max(1, self.q_t // 32)


@dataclass
class Grouping:
    """The outcome of one grouping pass.

    ``groups``: sample positions (int64 arrays) per group, in schedule order. ``packed``: True when a
    group is one packed sequence (ISF), False when it is a padded batch (random baseline).
    ``dropped``: reason -> sample positions left out of this epoch. ``full_groups``: how many groups
    passed the filter (the rest are the end-of-epoch leftovers).
    """

    groups: list[np.ndarray]
    packed: bool
    dropped: dict[str, np.ndarray] = field(default_factory=dict)
    full_groups: int = 0

    @property
    def num_dropped(self) -> int:
        return int(sum(len(v) for v in self.dropped.values()))


def _next_fit(order: np.ndarray, vit: np.ndarray, tok: np.ndarray, q_v: int, q_t: int) -> list[list[int]]:
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_v = cur_t = 0
    for i, v, t in zip(order.tolist(), vit[order].tolist(), tok[order].tolist()):
        if cur and (cur_v + v > q_v or cur_t + t > q_t):
            groups.append(cur)
            cur, cur_v, cur_t = [], 0, 0
        cur.append(i)
        cur_v += v
        cur_t += t
    if cur:
        groups.append(cur)
    return groups


def isf_groups(
    vit: np.ndarray, tok: np.ndarray, cfg: ISFConfig, *, seed: int, multiple_of: int = 1
) -> Grouping:
    """Group samples with ISF. ``vit``/``tok``: [N] per-sample tiles and tokens. Deterministic in ``seed``."""
    vit, tok = np.asarray(vit, dtype=np.int64), np.asarray(tok, dtype=np.int64)
    too_big = (vit > cfg.q_v) | (tok > cfg.q_t)
    pool = np.flatnonzero(~too_big)
    kept: list[list[int]] = []
    thresh = cfg.thresh
    for it in range(cfg.iterations):
        if pool.size == 0:
            break
        order = np.random.default_rng([seed, it]).permutation(pool)
        back: list[int] = []
        for group in _next_fit(order, vit, tok, cfg.q_v, cfg.q_t):
            if vit[group].sum() == cfg.q_v or tok[group].sum() >= thresh:
                kept.append(group)
            else:
                back.extend(group)
        pool = np.asarray(back, dtype=np.int64)
    full = len(kept)
    leftovers = _next_fit(
        np.random.default_rng([seed, cfg.iterations]).permutation(pool), vit, tok, cfg.q_v, cfg.q_t
    )
    groups = [np.asarray(g, dtype=np.int64) for g in kept + leftovers]
    groups, trimmed = _trim(groups, vit, tok, cfg.q_v, cfg.q_t, multiple_of)
    dropped = {"over_budget": np.flatnonzero(too_big), "round_to_ranks": trimmed}
    # Shuffled so that full groups and leftovers mix over the epoch instead of leftovers all coming last.
    perm = np.random.default_rng([seed, cfg.iterations + 1]).permutation(len(groups))
    return Grouping([groups[i] for i in perm], packed=True, dropped=dropped, full_groups=full)


def _trim(
    groups: list[np.ndarray], vit: np.ndarray, tok: np.ndarray, q_v: int, q_t: int, multiple_of: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Drop the lightest groups until the count divides ``multiple_of``; returns (groups, dropped samples)."""
    extra = len(groups) % multiple_of
    if extra == 0:
        return groups, np.zeros(0, dtype=np.int64)
    work = np.array([vit[g].sum() / q_v + tok[g].sum() / q_t for g in groups])
    drop = set(np.argsort(work, kind="stable")[:extra].tolist())
    kept = [g for i, g in enumerate(groups) if i not in drop]
    lost = np.concatenate([groups[i] for i in sorted(drop)])
    return kept, lost


def random_batches(n: int, batch_size: int, *, seed: int, multiple_of: int = 1) -> Grouping:
    """The baseline: a seeded shuffle cut into padded batches of ``batch_size`` samples.

    The tail that does not fill whole steps (``batch_size * multiple_of`` samples) is dropped, as a
    distributed sampler with ``drop_last`` would.
    """
    order = np.random.default_rng([seed]).permutation(n)
    per_round = batch_size * multiple_of
    usable = (n // per_round) * per_round
    groups = [order[i : i + batch_size] for i in range(0, usable, batch_size)]
    return Grouping(
        groups, packed=False, dropped={"round_to_ranks": np.sort(order[usable:])}, full_groups=len(groups)
    )
