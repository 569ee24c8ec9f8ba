"""OmniBal as its reference code (ModelTC/OmniBal) defines and runs it: the pad and Dist metrics, ISF with
groups dealt at random (the paper's) beside rayflow's longest-first dealing, the one-dimensional Q search,
`multi_group` and the length files with placeholder images for text-only samples."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from rayflow.train.omnibal.index import ImageTextFormat, LengthIndex, read_jsonl_index, read_length_files
from rayflow.train.omnibal.isf import ISFConfig
from rayflow.train.omnibal.qsearch import search_q_by_source, search_q_linear
from rayflow.train.omnibal.schedule import BalanceConfig, RankIterator, build_schedule
from rayflow.train.omnibal.synthetic import internvl_like_lengths


def reference_pad_dist(per_rank: list[list[list[tuple[int, int]]]]) -> tuple[float, float, float]:
    """The reference's `get_pad_dist_ratio`, written out: ``per_rank[r][k]`` is rank r's k-th micro-batch as
    its items' (tiles, tokens). Each micro-batch is padded to its longest item; a rank's LLM load in an
    iteration is that padded length, its vision load the tiles; Dist per iteration over ranks, vision with
    max(., 1) in the denominator; pad = total pad / total padded tokens."""
    pad_tokens = all_tokens = 0
    llm, vis = [], []
    for batches in per_rank:
        llm.append([])
        vis.append([])
        for items in batches:
            longest = max(t for _, t in items)
            pad_tokens += sum(longest - t for _, t in items)
            all_tokens += longest * len(items)
            llm[-1].append(longest)
            vis[-1].append(sum(v for v, _ in items))
    ranks, iterations = len(per_rank), len(llm[0])
    llm_dist, vit_dist = [], []
    for k in range(iterations):
        col = [llm[r][k] for r in range(ranks)]
        llm_dist.append(sum(max(col) - x for x in col) / float(max(col) * ranks))
        col = [vis[r][k] for r in range(ranks)]
        vit_dist.append(sum(max(col) - x for x in col) / max(float(max(col) * ranks), 1))
    return pad_tokens / float(all_tokens), sum(vit_dist) / len(vit_dist), sum(llm_dist) / len(llm_dist)


def micro_batches(schedule, vit, tok) -> list[list[list[tuple[int, int]]]]:
    """Each rank's micro-batches in the order it runs them; a packed group is one item, a padded batch B."""
    out = []
    for rank in range(schedule.ranks):
        out.append([])
        for _, groups in RankIterator(schedule, rank):
            for g in groups:
                if schedule.grouping.packed:
                    out[-1].append([(int(vit[g].sum()), int(tok[g].sum()))])
                else:
                    out[-1].append([(int(vit[i]), int(tok[i])) for i in g])
    return out


@pytest.fixture(scope="module")
def lengths():
    return internvl_like_lengths(3000, seed=11)


@pytest.mark.parametrize(
    "cfg",
    [
        BalanceConfig(balance="random", batch_size=4),
        BalanceConfig(isf=ISFConfig(q_v=16, q_t=5500, iterations=8), dealing="random"),
        BalanceConfig(isf=ISFConfig(q_v=16, q_t=5500, iterations=8), dealing="lpt"),
    ],
    ids=["padded", "paper-isf", "rayflow-isf"],
)
def test_report_metrics_equal_the_reference_computation(lengths, cfg):
    vit, tok = lengths
    schedule = build_schedule(vit, tok, cfg, ranks=4, micro_per_step=3, epoch=0)
    report = schedule.report(tok)
    pad, dist_vit, dist_llm = reference_pad_dist(micro_batches(schedule, vit, tok))
    assert report["pad"] == pytest.approx(pad, abs=1e-12)
    assert report["dist_vit"] == pytest.approx(dist_vit, abs=1e-12)
    assert report["dist_llm"] == pytest.approx(dist_llm, abs=1e-12)
    assert set(report["definitions"]) >= {"pad", "dist_vit", "dist_llm", "dist_vit_step", "dist_llm_step"}


def test_iterations_without_tiles_count_as_the_reference_counts_them():
    rng = np.random.default_rng(0)
    vit = np.where(rng.random(400) < 0.9, 0, rng.integers(1, 4, 400))  # mostly text without a placeholder
    tok = rng.integers(50, 900, 400)
    schedule = build_schedule(
        vit, tok, BalanceConfig(balance="random", batch_size=1), ranks=2, micro_per_step=1, epoch=0
    )
    loads = schedule.iteration_loads(schedule.work.tiles)
    assert (loads.max(axis=1) == 0).any()  # some iterations have no tiles on any rank
    report = schedule.report(tok)
    assert report["dist_vit"] == pytest.approx(reference_pad_dist(micro_batches(schedule, vit, tok))[1])
    assert report["dist_vit_step"] > report["dist_vit"]  # rayflow's per-step figure leaves those steps out


def test_paper_isf_and_rayflow_dealing_share_groups_and_differ_in_balance(lengths):
    vit, tok = lengths
    isf = ISFConfig(q_v=16, q_t=5500, iterations=8)
    paper = build_schedule(
        vit, tok, BalanceConfig(isf=isf, dealing="random"), ranks=8, micro_per_step=2, epoch=0
    )
    ours = build_schedule(vit, tok, BalanceConfig(isf=isf, dealing="lpt"), ranks=8, micro_per_step=2, epoch=0)
    as_set = lambda s: sorted(tuple(sorted(g.tolist())) for g in s.grouping.groups)
    assert as_set(paper) == as_set(ours)  # ISF itself is the same; only the dealing to ranks differs
    a, b = paper.report(tok), ours.report(tok)
    assert b["dist_llm_step"] < a["dist_llm_step"] and b["max_mean"] < a["max_mean"]


def test_multi_group_keeps_each_step_within_one_source(lengths):
    vit, tok = lengths
    source = np.where(np.arange(len(vit)) % 3 == 0, "text", "vision")
    cfg = BalanceConfig(
        isf=ISFConfig(q_v=16, q_t=5500, iterations=5),
        isf_by_source={"text": ISFConfig(q_v=8, q_t=3000, iterations=5)},
        multi_group=True,
    )
    schedule = build_schedule(vit, tok, cfg, ranks=4, micro_per_step=2, epoch=0, source=source)
    for step in range(schedule.num_steps):
        names = {source[g][0] for r in range(4) for g in schedule.groups_for(r, step)}
        assert len(names) == 1
        for r in range(4):
            for g in schedule.groups_for(r, step):
                assert len(set(source[g])) == 1
                limit = cfg.isf_by_source.get(source[g][0], cfg.isf)
                assert vit[g].sum() <= limit.q_v and tok[g].sum() <= limit.q_t
    used = np.concatenate(schedule.grouping.groups)
    dropped = np.concatenate(list(schedule.grouping.dropped.values()))
    assert sorted(np.concatenate([used, dropped]).tolist()) == list(range(len(vit)))
    with pytest.raises(ValueError, match="data source"):
        build_schedule(vit, tok, cfg, ranks=4, micro_per_step=2, epoch=0)


def test_linear_q_search_walks_one_tile_at_a_time_as_the_reference(lengths):
    vit, tok = lengths
    result = search_q_linear(vit, tok, ranks=8, samples_per_group=4, iterations=5, q_t_start=2048)
    per_tile = max(16, int(((np.ceil(tok / 256) * 256).mean() // vit.mean() + 1) // 16 * 16))
    steps = [(r["q_v"], r["q_t"]) for r in result.table]
    assert steps[0] == (2048 // per_tile, 2048)
    assert all(
        abs(b[0] - a[0]) == 1 and b[1] - a[1] == per_tile * (b[0] - a[0])
        for a, b in itertools.pairwise(steps)
    )
    assert all(r["llm_thresh"] == r["q_t"] - 128 for r in result.table)
    # It stops at the first setting in range once some setting's groups were too large, or walks on.
    sizes = [r["mean_samples_per_group"] for r in result.table]
    assert any(4 <= s <= 5 for s in sizes)
    in_range = [r for r in result.table if r["in_range"]]
    assert result.report["score"] == min(r["score"] for r in in_range)
    assert result.isf.thresh == result.isf.q_t - 128
    by_source = search_q_by_source(
        vit,
        tok,
        np.where(np.arange(len(vit)) % 2 == 0, "a", "b"),
        linear=True,
        ranks=4,
        iterations=3,
        q_t_start=2048,
    )
    assert set(by_source) == {"a", "b"}


def test_length_files_give_placeholder_tiles_and_one_source_per_meta_file(tmp_path):
    (tmp_path / "lengths").mkdir()
    (tmp_path / "lengths" / "chart.json").write_text(
        json.dumps(
            [
                {"vit_num": 5, "token_num": 811, "image_flag": 3},
                {"vit_num": 1, "token_num": 920, "image_flag": 0},
            ]
        )
    )
    (tmp_path / "lengths" / "chat.json").write_text(
        json.dumps([{"vit_num": 0, "token_num": 300, "image_flag": 0}])
    )
    (tmp_path / "vlm.json").write_text(
        json.dumps({"chart": {"token_lengths": "lengths/chart.json"}, "x": {}})
    )
    (tmp_path / "llm.json").write_text(json.dumps({"chat": {"token_lengths": "lengths/chat.json"}}))
    index = read_length_files([tmp_path / "vlm.json", tmp_path / "llm.json"])
    assert index.vit.tolist() == [5, 1, 1]  # text-only: the fake image counts one tile either way
    assert index.tok.tolist() == [811, 920, 300]
    assert index.source.tolist() == ["vlm", "vlm", "llm"]
    assert index.ids.tolist() == ["vlm/chart/0", "vlm/chart/1", "llm/chat/0"]
    (tmp_path / "lengths" / "chat.json").write_text(json.dumps([{"vit_num": 1}]))
    with pytest.raises(ValueError, match="chat.json row 0"):
        read_length_files([tmp_path / "llm.json"])


def test_jsonl_source_reaches_the_index(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [
        {"id": "a", "images": [1], "text": "red .", "source": "captions"},
        {"id": "b", "images": [], "text": "hello there"},
        {"id": "c", "images": [], "text": "x", "source": 3},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fmt = ImageTextFormat(tiles_per_image=1, tokens_per_tile=4, count_text=lambda t: len(t.split()))
    index, samples, errors = read_jsonl_index(path, fmt)
    assert [s["source"] for s in samples] == ["captions", ""]
    assert index.source.tolist() == ["captions", ""] and index.vit.tolist() == [1, 1]
    assert errors == [{"source": str(path), "line": 3, "reason": "field 'source' must be a string"}]
    index.save(tmp_path / "i.npz")
    assert LengthIndex.load(tmp_path / "i.npz").source.tolist() == ["captions", ""]


def test_training_plan_with_the_reference_q_search_per_source():
    from rayflow.config import load_config
    from rayflow.llm import EngineConfig, load_tokenizer, resolve_model_path
    from rayflow.train.omnibal.train import TrainVLMConfig, load_samples, plan_run

    cfg = load_config(
        TrainVLMConfig,
        Path(__file__).resolve().parents[3] / "configs" / "train_vlm_zero.yaml",
        ["q_search=linear", "balance.multi_group=true", "balance.dealing=random"],
    )
    tokenizer = load_tokenizer(EngineConfig(model=resolve_model_path(cfg.tokenizer)))
    index, _, _ = load_samples(cfg, tokenizer, cfg.vlm_config(tokenizer))
    source = np.where(index.tok > np.median(index.tok), "long", "short")
    index = LengthIndex(index.ids, index.vit, index.tok, source)
    plan = plan_run(cfg, index, cfg.vlm_config(tokenizer))
    found = plan.report["q_search"]
    assert found["method"] == "linear" and set(found["by_source"]) == {"long", "short"}
    for name, isf in found["by_source"].items():
        assert plan.balance.isf_by_source[name].q_t == isf["q_t"] and isf["llm_thresh"] == isf["q_t"] - 128
    assert plan.report["balance"]["definitions"]["dist_llm"].startswith("reference")
