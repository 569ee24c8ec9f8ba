"""ISF grouping, schedules and per-rank iterators: invariants on synthetic and InternVL-like lengths."""

from __future__ import annotations

import numpy as np
import pytest

from rayflow.train.omnibal.isf import ISFConfig, isf_groups, random_batches
from rayflow.train.omnibal.schedule import BalanceConfig, RankIterator, build_schedule
from rayflow.train.omnibal.synthetic import internvl_like_lengths


@pytest.fixture(scope="module")
def lengths():
    return internvl_like_lengths(5000, seed=3)


def test_each_sample_once_and_every_sample_accounted(lengths):
    vit, tok = lengths
    # A few samples no group can hold: they must be dropped, and logged as such.
    vit, tok = vit.copy(), tok.copy()
    vit[:3] = 40
    tok[3] = 10_000
    cfg = ISFConfig(q_v=16, q_t=5500, iterations=20)
    g = isf_groups(vit, tok, cfg, seed=1, multiple_of=8)
    used = np.concatenate(g.groups)
    dropped = np.concatenate(list(g.dropped.values()))
    assert len(np.unique(used)) == len(used)
    assert sorted(np.concatenate([used, dropped]).tolist()) == list(range(len(vit)))
    assert set(g.dropped["over_budget"].tolist()) == {0, 1, 2, 3}
    assert len(g.groups) % 8 == 0
    assert g.num_dropped == len(dropped)


def test_groups_respect_budgets_and_full_groups_meet_threshold(lengths):
    vit, tok = lengths
    cfg = ISFConfig(q_v=16, q_t=5500, iterations=20)
    g = isf_groups(vit, tok, cfg, seed=0)
    sums = np.array([(vit[x].sum(), tok[x].sum()) for x in g.groups])
    assert (sums[:, 0] <= cfg.q_v).all() and (sums[:, 1] <= cfg.q_t).all()
    full = (sums[:, 0] == cfg.q_v) | (sums[:, 1] >= cfg.thresh)
    # Groups are shuffled, so count: at least `full_groups` of them pass the filter.
    assert full.sum() >= g.full_groups > 0.8 * len(g.groups)


def test_isf_is_deterministic_in_seed(lengths):
    vit, tok = lengths
    cfg = ISFConfig(q_v=16, q_t=5500, iterations=10)
    a, b, c = (isf_groups(vit, tok, cfg, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(x, y) for x, y in zip(a.groups, b.groups))
    assert not all(np.array_equal(x, y) for x, y in zip(a.groups, c.groups))


def test_threshold_above_budget_is_rejected():
    with pytest.raises(ValueError, match="llm_thresh"):
        ISFConfig(q_t=100, llm_thresh=200)


def test_random_batches_drop_only_the_tail():
    g = random_batches(103, 4, seed=0, multiple_of=5)
    assert len(g.groups) == 25 and all(len(x) == 4 for x in g.groups)
    assert len(g.dropped["round_to_ranks"]) == 3


@pytest.mark.parametrize("balance", ["isf", "random"])
def test_every_rank_gets_the_same_number_of_steps_and_disjoint_samples(lengths, balance):
    vit, tok = lengths
    cfg = BalanceConfig(balance=balance, isf=ISFConfig(q_v=16, q_t=5500, iterations=10), seed=4)
    sched = build_schedule(vit, tok, cfg, ranks=4, micro_per_step=3, epoch=2)
    per_rank = [list(RankIterator(sched, r)) for r in range(4)]
    assert len({len(x) for x in per_rank}) == 1 and len(per_rank[0]) == sched.num_steps > 0
    assert all(len(groups) == 3 for steps in per_rank for _, groups in steps)
    seen = np.concatenate([g for steps in per_rank for _, groups in steps for g in groups])
    assert len(np.unique(seen)) == len(seen)


def test_schedule_is_rebuilt_identically_and_changes_with_epoch(lengths):
    vit, tok = lengths
    cfg = BalanceConfig(isf=ISFConfig(q_v=16, q_t=5500, iterations=5), seed=4)
    a = build_schedule(vit, tok, cfg, ranks=2, micro_per_step=2, epoch=0)
    b = build_schedule(vit, tok, cfg, ranks=2, micro_per_step=2, epoch=0)
    c = build_schedule(vit, tok, cfg, ranks=2, micro_per_step=2, epoch=1)
    assert np.array_equal(a.assignment, b.assignment)
    assert all(np.array_equal(x, y) for x, y in zip(a.grouping.groups, b.grouping.groups))
    assert not all(np.array_equal(x, y) for x, y in zip(a.grouping.groups, c.grouping.groups))


def test_resume_mid_epoch_continues_exactly(lengths):
    vit, tok = lengths
    cfg = BalanceConfig(isf=ISFConfig(q_v=16, q_t=5500, iterations=5))
    sched = build_schedule(vit, tok, cfg, ranks=2, micro_per_step=2, epoch=0)
    it = RankIterator(sched, rank=1)
    first = [next(iter(it)) for _ in range(5)]
    state = it.state_dict()
    assert state == {"epoch": 0, "step": 5}
    rest = list(it)
    rebuilt = build_schedule(vit, tok, cfg, ranks=2, micro_per_step=2, epoch=state["epoch"])
    resumed = list(RankIterator(rebuilt, rank=1, start_step=state["step"]))
    assert [s for s, _ in resumed] == [s for s, _ in rest] == list(range(5, sched.num_steps))
    assert all(np.array_equal(x, y) for (_, a), (_, b) in zip(rest, resumed) for x, y in zip(a, b))
    assert [s for s, _ in first] == list(range(5))


def test_too_little_data_for_one_step_names_the_problem():
    with pytest.raises(ValueError, match="no complete step"):
        build_schedule(
            np.ones(3, int),
            np.full(3, 10),
            BalanceConfig(balance="random", batch_size=2),
            ranks=2,
            micro_per_step=1,
            epoch=0,
        )


def test_isf_balances_far_better_than_random_on_internvl_like_lengths(lengths):
    vit, tok = lengths
    isf = build_schedule(
        vit, tok, BalanceConfig(isf=ISFConfig(q_v=16, q_t=5500)), ranks=8, micro_per_step=1, epoch=0
    )
    rnd = build_schedule(vit, tok, BalanceConfig(balance="random"), ranks=8, micro_per_step=1, epoch=0)
    a, b = isf.report(tok), rnd.report(tok)
    assert a["pad"] == 0.0 and b["pad"] > 0.15
    assert a["dist_vit"] <= 0.05 and a["dist_llm"] <= 0.05 and a["max_mean"] <= 1.05
    assert b["dist_vit"] > 0.1 and b["max_mean"] > 1.1
