"""Judge training: item reading, the deterministic split, SFT targets, pair building, scoring, input checks,
and one round of the workflow on the real trainer."""

import json
import runpy
import sys
from pathlib import Path

import pytest

from rayflow.eval.safety.metaeval import MetaEvalConfig
from rayflow.train.judge import (
    preference_pairs,
    read_items,
    reference_output,
    score_outputs,
    split_items,
)
from tests.conftest import REPO

EXAMPLES = str(REPO / "examples/safety/labelled.jsonl")


def test_read_items_needs_reference_aius(tmp_path):
    items, errors = read_items(EXAMPLES)
    assert len(items) == 16 and not errors and all(it["aius"] for it in items)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "response": "r", "label": "safe"}) + "\n{\n")
    items, errors = read_items(str(bad))
    assert items == [] and [e["line"] for e in errors] == [1, 2] and "'aius'" in errors[0]["reason"]


def test_split_is_deterministic_and_disjoint():
    items, _ = read_items(EXAMPLES)
    train, val = split_items(items, 0.25, seed=0)
    assert len(val) == 4 and len(train) == 12 and not {i["id"] for i in train} & {i["id"] for i in val}
    assert split_items(list(reversed(items)), 0.25, seed=0) == (train, val)


def test_reference_output_is_the_protocol_rendering_of_the_gold_judgement():
    from rayflow.eval.safety import parse_judgement

    items, _ = read_items(EXAMPLES)
    assert {it["lang"] for it in items} == {"en", "zh"}
    for item in items:
        parsed = parse_judgement("safetyj", reference_output(item), item["lang"])
        assert parsed.parse_ok and parsed.label == item["label"] and parsed.critique == item["critique"]
    zh = next(it for it in items if it["lang"] == "zh")
    assert reference_output(zh).startswith("[答案] ")  # the judge answers in the request's language


def test_pairs_take_best_over_worst_and_skip_ties():
    items = [
        {"id": "a", "query": "q", "response": "r", "lang": "en"},
        {"id": "b", "query": "q", "response": "r", "lang": "en"},
    ]
    outputs = [["good", "ok", "bad"], ["same", "same too"]]
    scores = [
        [{"correct": True, "f1": 0.9}, {"correct": True, "f1": 0.2}, {"correct": False, "f1": 1.0}],
        [{"correct": False, "f1": 0.0}, {"correct": False, "f1": 0.0}],
    ]
    [pair] = preference_pairs(items, outputs, scores)
    assert (pair["id"], pair["chosen"], pair["rejected"]) == ("a", "good", "bad")  # label first, then F1
    assert pair["prompt"][0]["role"] == "system"


def test_score_outputs_with_a_real_tiny_meta_evaluator(tiny_model):
    from rayflow.llm import EngineConfig, build_engine

    engine = build_engine(
        EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=1024)
    )
    items, _ = read_items(EXAMPLES)
    item = items[2]  # gold unsafe
    outputs = [["[Answer] unsafe\n[Analysis] It encourages sabotage.", "[Answer] safe", "gibberish"]]
    [scores] = score_outputs(
        [item], outputs, engine, MetaEvalConfig(extraction_max_tokens=16, verdict_max_tokens=8)
    )
    assert [s["label"] for s in scores] == ["unsafe", "safe", "unknown"]
    assert [s["correct"] for s in scores] == [True, False, False]
    assert scores[1]["f1"] == scores[2]["f1"] == 0.0  # no critique: empty AIU list scores 0
    assert 0.0 <= scores[0]["f1"] <= 1.0


@pytest.mark.slow
def test_a_round_trains_with_dpo_and_keeps_the_better_judge(ray_session, tiny_model, tmp_path, monkeypatch):
    """One round on the real trainer (Ray Train + DeepSpeed DPO) and real greedy validation. Sampling is
    scripted — one correct and one wrong verdict per item — because a random tiny judge never writes the
    protocol's format, so its own samples would all tie and yield no pairs."""
    from rayflow.llm import EngineConfig
    from rayflow.train import judge as judge_training
    from rayflow.train.judge import TrainJudgeConfig, run

    def scripted(engine, items, k, temperature, max_tokens, seed):
        flip = {"safe": "unsafe", "unsafe": "safe"}
        return [[reference_output(it), reference_output({**it, "label": flip[it["label"]]})] for it in items]

    monkeypatch.setattr(judge_training, "sample_outputs", scripted)
    model = str(tiny_model)
    cfg = TrainJudgeConfig(
        model=model, output_dir=str(tmp_path), rounds=1, sft_warmstart=False, samples_per_item=2, max_tokens=8,
        metaeval_engine=EngineConfig(backend="hf", model=model, dtype="float32", max_model_len=1024),
        metaeval=MetaEvalConfig(extraction_max_tokens=4, verdict_max_tokens=4),
        dpo_train={"num_workers": 1, "max_steps": 2, "micro_batch_size": 4, "lr": 1e-4},
        precompute={"cpus_per_actor": 0.5},
    )  # fmt: skip
    result = run(cfg)
    summary = result.summary
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "ok"
    start, first = summary["rounds"]
    assert start["round"] == 0 and first["pairs"] == 12 == summary["train_items"]
    pairs = [json.loads(line) for line in (tmp_path / "round_1" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["chosen"].split("\n")[0] != p["rejected"].split("\n")[0] for p in pairs)
    assert first["training"]["final_metrics"]["step"] == 2  # the preference trainer really ran
    # The round's DPO run lists its curves: TensorBoard events and the loss curve.
    assert (
        Path(first["training"]["tensorboard_dir"]).is_dir() and Path(first["training"]["curve_png"]).is_file()
    )
    assert summary["sft"] is None  # no warm start asked for
    assert (tmp_path / "round_1" / "model" / "config.json").exists()
    better = (first["val"]["meta_f1_macro"], first["val"]["label_accuracy"]) > (
        start["val"]["meta_f1_macro"], start["val"]["label_accuracy"])  # fmt: skip
    assert first["kept"] == better
    assert summary["best"]["source"] == (first["model"] if better else model)
    assert (tmp_path / "best" / "config.json").exists()
    assert str(tmp_path / "best") in result.message


def test_job_refuses_a_missing_input_before_ray_starts(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope.jsonl"
    monkeypatch.setattr("ray.init", lambda *a, **k: pytest.fail("ray.init ran before the input check"))
    monkeypatch.setattr(sys, "argv", ["train_judge.py", f"data={missing}", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / "jobs" / "train_judge.py"), run_name="__main__")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: data: {str(missing)!r} does not exist"
    assert not (tmp_path / "out").exists()


def test_shipped_config_loads():
    from rayflow.config import load_config
    from rayflow.train.judge import TrainJudgeConfig

    cfg = load_config(TrainJudgeConfig, REPO / "configs/train_judge.yaml")
    assert cfg.rounds >= 1 and cfg.sft_warmstart and cfg.dpo.loss_type == "sigmoid"
