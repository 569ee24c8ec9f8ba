"""Per-epoch schedules and the per-rank iterators that read them.

Every data-parallel rank builds the same :class:`EpochSchedule` from (seed, epoch) on its own, from the
length index alone, and then reads only its own column: no Ray Data split, no communication, and the
same number of steps on every rank by construction (Ray Data's ``streaming_split`` equalises rows, not
batches, which is how ranks drift apart and collectives hang). The training driver verifies the count
with one all-reduce per epoch (:func:`rayflow.train.loop.check_equal_across_ranks`).

A step gives each of the D ranks ``micro_per_step`` groups (pipeline micro-batches or gradient
accumulation). With ``balance="isf"`` the groups come from ISF and are then dealt to ranks:

- ``dealing="lpt"`` (rayflow's): each step holds groups of similar work (sorted by cost, cut into steps,
  longest-processing-time first across ranks);
- ``dealing="random"`` (ISF as the paper and its reference code run it): the shuffled groups are dealt in
  order, as a distributed sampler would.

Either way the step order is shuffled per epoch. With ``multi_group`` (the reference's option of that name)
ISF runs per data source (``source`` per sample), each source with its own budgets if
``isf_by_source`` names them, and every step holds groups of one source only. With ``balance="random"``
groups are padded random batches dealt in order, the usual sampler behaviour and the baseline.

Resuming mid-epoch is (epoch, next step): the schedule is rebuilt bit-identically and the iterator starts
at that step.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from rayflow.config import Config
from rayflow.train.omnibal.isf import Grouping, ISFConfig, isf_groups, random_batches
from rayflow.train.omnibal.metrics import dist_ratio, max_mean, pad_ratio

__all__ = [
    "BalanceConfig",
    "EpochSchedule",
    "GroupWork",
    "RankIterator",
    "build_schedule",
]


class BalanceConfig(Config):
    """How samples become device micro-batches."""

    balance: Literal["isf", "random"] = Field(
        "isf", description="isf: packed balanced groups; random: baseline"
    )
    isf: ISFConfig = ISFConfig()
    dealing: Literal["lpt", "random"] = Field(
        "lpt", description="isf: lpt = similar-cost groups side by side (rayflow); random = as the paper"
    )
    multi_group: bool = Field(
        False, description="isf: group each data source apart (the reference's multi_group)"
    )
    isf_by_source: dict[str, ISFConfig] = Field(
        default_factory=dict, description="multi_group: budgets per source name (others use isf)"
    )
    batch_size: int = Field(4, ge=1, description="samples per padded micro-batch when balance=random")
    seed: int = Field(0, description="shared by every rank; the epoch is mixed in")


@dataclass(frozen=True)
class GroupWork:
    """What one micro-batch asks of the model, per group (arrays of length G).

    ``tiles``: ViT tiles; ``tokens``: real LLM tokens; ``run_tokens``: tokens the LLM actually computes
    (padded batches compute B * max length); ``sq_tokens``: the attention term, sum of squared sequence
    lengths (a packed group attends within each sample, a padded batch over the full padded length).
    """

    tiles: np.ndarray
    tokens: np.ndarray
    run_tokens: np.ndarray
    sq_tokens: np.ndarray

    @classmethod
    def of(cls, grouping: Grouping, vit: np.ndarray, tok: np.ndarray) -> GroupWork:
        tiles, tokens, run, sq = [], [], [], []
        for g in grouping.groups:
            t = tok[g].astype(np.float64)
            tiles.append(vit[g].sum())
            tokens.append(t.sum())
            if grouping.packed:
                run.append(t.sum())
                sq.append((t * t).sum())
            else:
                run.append(t.max() * len(t))
                sq.append(t.max() ** 2 * len(t))
        arrays = (np.asarray(a, dtype=np.float64) for a in (tiles, tokens, run, sq))
        return cls(*arrays)

    def take(self, ids: np.ndarray) -> GroupWork:
        return GroupWork(self.tiles[ids], self.tokens[ids], self.run_tokens[ids], self.sq_tokens[ids])


CostFn = Callable[[GroupWork], np.ndarray]


def default_cost(work: GroupWork) -> np.ndarray:
    """The spec's toy cost in tile-equivalents: tiles + computed tokens / 256."""
    return work.tiles + work.run_tokens / 256.0


METRIC_DEFINITIONS = {
    "pad": "reference: total pad tokens / total tokens of the padded micro-batches",
    "dist_vit": "reference: Dist of tiles per micro-batch iteration; iterations without tiles count as 0",
    "dist_llm": "reference: Dist of each rank's padded length per micro-batch iteration",
    "dist_vit_step": "rayflow: Dist of tiles per step (micro-batches summed); steps without tiles skipped",
    "dist_llm_step": "rayflow: Dist of computed tokens per step (micro-batches summed)",
    "max_mean": "rayflow: busiest rank's cost / mean rank cost per step, averaged",
}


@dataclass(frozen=True)
class EpochSchedule:
    """One epoch's plan: ``assignment[step, rank, j]`` is the j-th group that rank runs at that step."""

    epoch: int
    grouping: Grouping
    assignment: np.ndarray  # [steps, ranks, micro_per_step] int64
    work: GroupWork

    @property
    def num_steps(self) -> int:
        return int(self.assignment.shape[0])

    @property
    def ranks(self) -> int:
        return int(self.assignment.shape[1])

    def groups_for(self, rank: int, step: int) -> list[np.ndarray]:
        """Sample positions of each micro-batch rank ``rank`` runs at ``step``."""
        return [self.grouping.groups[g] for g in self.assignment[step, rank]]

    def rank_loads(self, values: np.ndarray) -> np.ndarray:
        """Per-group ``values`` [G] summed per rank and step: [steps, ranks]."""
        return values[self.assignment].sum(axis=2)

    def iteration_loads(self, values: np.ndarray) -> np.ndarray:
        """Per-group ``values`` [G] per micro-batch iteration and rank: [steps * micro_per_step, ranks]."""
        return values[self.assignment].transpose(0, 2, 1).reshape(-1, self.ranks)

    def report(self, tok: np.ndarray, cost: CostFn = default_cost) -> dict:
        """Balance metrics and counts, as a JSON-able dict; ``definitions`` says what each metric is.

        ``pad``, ``dist_vit``, ``dist_llm`` are the reference's definitions (see :mod:`.metrics`): per
        micro-batch iteration, LLM load = the micro-batch's padded length, iterations without tiles counted.
        ``dist_vit_step``, ``dist_llm_step`` are rayflow's: per step (a rank's micro-batches summed, since
        ranks synchronise once per step), LLM load = tokens computed, steps without tiles skipped.
        """
        groups = self.grouping.groups
        batches = [] if self.grouping.packed else [tok[g] for g in groups]
        used = int(sum(len(g) for g in groups))
        if self.grouping.packed:  # one sequence: its length is the group's tokens
            padded_length = self.work.tokens
        else:  # B samples padded to the longest
            padded_length = self.work.run_tokens / np.array([len(g) for g in groups], dtype=np.float64)
        return {
            "balance": "isf" if self.grouping.packed else "random",
            "steps": self.num_steps,
            "groups": len(groups),
            "samples_used": used,
            "samples_dropped": {k: len(v) for k, v in self.grouping.dropped.items()},
            "mean_samples_per_group": used / max(1, len(groups)),
            "pad": pad_ratio(batches),
            "dist_vit": dist_ratio(self.iteration_loads(self.work.tiles)),
            "dist_llm": dist_ratio(self.iteration_loads(padded_length)),
            "dist_vit_step": dist_ratio(self.rank_loads(self.work.tiles), idle="skip"),
            "dist_llm_step": dist_ratio(self.rank_loads(self.work.run_tokens), idle="skip"),
            "max_mean": max_mean(self.rank_loads(cost(self.work))),
            "definitions": METRIC_DEFINITIONS,
        }


def build_schedule(
    vit: np.ndarray,
    tok: np.ndarray,
    cfg: BalanceConfig,
    *,
    ranks: int,
    micro_per_step: int,
    epoch: int,
    cost: CostFn = default_cost,
    source: np.ndarray | None = None,
) -> EpochSchedule:
    """The epoch's schedule over samples with [N] ``vit`` tiles and ``tok`` tokens; same on every rank.

    ``source``: [N] data-source names, used when ``cfg.multi_group`` is set.
    """
    vit, tok = np.asarray(vit, dtype=np.int64), np.asarray(tok, dtype=np.int64)
    per_step = ranks * micro_per_step
    seed = int(np.random.SeedSequence([cfg.seed, epoch]).generate_state(1)[0])
    if cfg.balance == "isf":
        if cfg.multi_group and source is None:
            raise ValueError("balance.multi_group needs each sample's data source")
        grouping, blocks = _isf_by_source(vit, tok, cfg, source if cfg.multi_group else None, seed, per_step)
    else:
        grouping = random_batches(len(vit), cfg.batch_size, seed=seed, multiple_of=per_step)
    if not grouping.groups:
        raise ValueError(
            f"epoch {epoch}: no complete step: {len(vit)} samples give fewer than {per_step} groups "
            f"({ranks} ranks x {micro_per_step} micro-batches); use more data or smaller groups"
        )
    work = GroupWork.of(grouping, vit, tok)
    if cfg.balance == "isf":
        costs = cost(work)
        steps = [
            ids[_deal_balanced(costs[ids], ranks, micro_per_step)]
            if cfg.dealing == "lpt"
            else ids.reshape(-1, ranks, micro_per_step)
            for ids in blocks
            if len(ids)
        ]
        assignment = np.concatenate(steps)
        assignment = assignment[np.random.default_rng([seed, 1]).permutation(len(assignment))]
    else:
        assignment = np.arange(len(grouping.groups)).reshape(-1, ranks, micro_per_step)
    return EpochSchedule(epoch=epoch, grouping=grouping, assignment=assignment, work=work)


def _isf_by_source(
    vit: np.ndarray, tok: np.ndarray, cfg: BalanceConfig, source: np.ndarray | None, seed: int, per_step: int
) -> tuple[Grouping, list[np.ndarray]]:
    """ISF over all samples, or per source; returns the grouping and each source's group ids."""
    if source is None:
        grouping = isf_groups(vit, tok, cfg.isf, seed=seed, multiple_of=per_step)
        return grouping, [np.arange(len(grouping.groups))]
    source = np.asarray(source).astype(str)
    groups: list[np.ndarray] = []
    dropped: dict[str, list[np.ndarray]] = {}
    blocks, full = [], 0
    for k, name in enumerate(np.unique(source).tolist()):
        members = np.flatnonzero(source == name)
        sub_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        part = isf_groups(
            vit[members],
            tok[members],
            cfg.isf_by_source.get(name, cfg.isf),
            seed=sub_seed,
            multiple_of=per_step,
        )
        blocks.append(np.arange(len(groups), len(groups) + len(part.groups)))
        groups += [members[g] for g in part.groups]
        for reason, positions in part.dropped.items():
            dropped.setdefault(reason, []).append(members[positions])
        full += part.full_groups
    merged = {reason: np.sort(np.concatenate(parts)) for reason, parts in dropped.items()}
    return Grouping(groups, packed=True, dropped=merged, full_groups=full), blocks


def _deal_balanced(costs: np.ndarray, ranks: int, micro: int) -> np.ndarray:
    """Deal groups into steps of similar cost, LPT across ranks within a step: [steps, ranks, micro] ids."""
    order = np.argsort(-costs, kind="stable")
    per_step = ranks * micro
    steps = []
    for s in range(0, len(order), per_step):
        chunk = order[s : s + per_step]  # descending cost: LPT places the heaviest first
        heap = [(0.0, r) for r in range(ranks)]
        slots: list[list[int]] = [[] for _ in range(ranks)]
        for g in chunk.tolist():
            load, r = heapq.heappop(heap)
            slots[r].append(g)
            # A full rank leaves the heap so every rank ends with exactly `micro` groups.
            if len(slots[r]) < micro:
                heapq.heappush(heap, (load + costs[g], r))
        steps.append(slots)
    return np.asarray(steps, dtype=np.int64)


class RankIterator:
    """One rank's view of an epoch: yields ``(step, [sample positions per micro-batch])`` from ``start_step``."""

    def __init__(self, schedule: EpochSchedule, rank: int, start_step: int = 0) -> None:
        if not 0 <= rank < schedule.ranks:
            raise ValueError(f"rank {rank} outside the schedule's {schedule.ranks} ranks")
        if not 0 <= start_step <= schedule.num_steps:
            raise ValueError(
                f"start_step {start_step} outside epoch {schedule.epoch} of {schedule.num_steps} steps"
            )
        self.schedule, self.rank, self.step = schedule, rank, start_step

    def __len__(self) -> int:
        return self.schedule.num_steps - self.step

    def __iter__(self) -> Iterator[tuple[int, list[np.ndarray]]]:
        while self.step < self.schedule.num_steps:
            step = self.step
            self.step += 1
            yield step, self.schedule.groups_for(self.rank, step)

    def state_dict(self) -> dict:
        """Where to resume: the epoch and the next step not yet run."""
        return {"epoch": self.schedule.epoch, "step": self.step}
