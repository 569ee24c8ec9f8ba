"""Both ECon workflows end to end on Ray Data (the tests' Ray session, hf backend, tiny models): conflict-set
generation with a deterministic validator, and three detectors over the shipped conflict set."""

import json
import shutil

import pandas as pd
import pytest

from rayflow.config import load_config
from rayflow.eval.conflicts.detectors import DetectorConfig, build_detector
from rayflow.eval.conflicts.evaluate import EvalConflictsConfig
from rayflow.eval.conflicts.evaluate import run as eval_conflicts
from rayflow.eval.conflicts.make import MakeConflictsConfig
from rayflow.eval.conflicts.make import run as make_conflicts
from rayflow.eval.conflicts.pairs import TYPES, read_pairs
from tests.conftest import REPO


def test_make_conflicts_counts_every_stage_and_keeps_what_the_validator_passes(ray_session, tmp_path):
    lines = (REPO / "examples/conflicts/questions.jsonl").read_text().splitlines()
    (tmp_path / "q.jsonl").write_text("\n".join([*lines, '{"question": 7}']) + "\n")
    # A deterministic validator on the random models: every passage and edit passes (thresholds 0), every
    # negation fails (P(contradiction) < 1), so answer and lexical sets survive and factoid sets do not.
    cfg = load_config(MakeConflictsConfig, REPO / "configs/make_conflicts.yaml", [
        f"input={tmp_path / 'q.jsonl'}", f"output_dir={tmp_path / 'out'}", "sampling.max_tokens=12",
        "validation.min_entailment=0", "validation.min_agreement=0", "validation.min_contradiction=1",
        "stage.batch_size=4",
    ])  # fmt: skip
    s = make_conflicts(cfg).summary
    out = tmp_path / "out"
    candidates = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()]
    errors = pd.read_parquet(out / "errors" / "errors.parquet")
    # Every line ends in candidates or errors, once.
    assert s["lines_in"] == len(lines) + 1 == len(candidates) + len(errors) and s["errors"] == 1
    assert errors.iloc[0]["line"] == len(lines) + 1 and "field 'question'" in errors.iloc[0]["reason"]
    given = {c["id"]: c for c in candidates if not c["proposed"]}
    assert [len(given[q]["answers"]) for q in ("museum", "viaduct", "observatory", "lake")] == [2, 2, 2, 2]
    assert s["answers"] == sum(len(c["answers"]) for c in candidates)
    # Two passages per answer of every question with two or more answers; all written ones pass.
    with_sets = [c for c in candidates if len(c["answers"]) >= 2]
    assert len([e for c in with_sets for e in c["evidence"]]) == 2 * sum(len(c["answers"]) for c in with_sets)
    assert s["evidence_valid"] == s["evidence_written"] >= 16
    assert s["edits_valid"] == s["edits_substituted"] + s["edits_rewritten"] >= 8  # both directions
    assert s["facts"] == 7 and s["negations_valid"] == 0 and s["pairs_factoid"] == 0
    assert s["pairs_answer"] == s["pairs_lexical"] >= 4 * 3  # one triple per answer pair, and its edit
    pairs, bad = read_pairs(str(out / "pairs.jsonl"))
    assert not bad and len(pairs) == s["pairs"] and s["questions_with_pairs"] >= 4
    museum = [p for p in pairs if p["set_id"] == "museum/0-1"]
    assert [p["conflict"] for p in museum] == [True, True, False] * 2 and {p["type"] for p in museum} == {"entity"}
    assert "| evidence_valid |" in (out / "report.md").read_text()


def test_eval_conflicts_runs_three_detectors_over_the_shipped_set(ray_session, tmp_path):
    data = tmp_path / "pairs.jsonl"
    shutil.copy(REPO / "examples/conflicts/pairs.jsonl", data)
    with data.open("a") as f:
        f.write('{"id": "broken", "evidence_a": "x", "conflict": true}\n')
    cfg = load_config(EvalConflictsConfig, REPO / "configs/eval_conflicts.yaml",
                      [f"input={data}", f"output_dir={tmp_path / 'out'}", "stage.batch_size=16"])  # fmt: skip
    s = eval_conflicts(cfg).summary
    out = tmp_path / "out"
    rows, _ = read_pairs(str(REPO / "examples/conflicts/pairs.jsonl"))
    assert (s["pairs"], s["errors"]) == (len(rows), 1) and set(s["f1"]) == {"nli", "consistency", "llm"}
    pred = pd.read_parquet(out / "predictions.parquet")
    assert list(pred["id"]) == [r["id"] for r in rows]
    for name in ("nli", "consistency", "llm"):
        assert pred[f"{name}_error"].isna().all() and pred[f"{name}_score"].between(0, 1).all()
    # The Ray path gives what the detector gives in plain Python.
    plain = build_detector(DetectorConfig(kind="nli")).detect([(r["evidence_a"], r["evidence_b"], r["question"])
                                                               for r in rows])  # fmt: skip
    assert list(pred["nli_conflict"]) == [d.conflict for d in plain]
    assert pred["nli_score"].tolist() == pytest.approx([d.score for d in plain], abs=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    for m in metrics.values():
        assert set(m["by_type"]) == set(TYPES) and set(m["by_kind"]) == {"answer", "lexical", "factoid"}
        assert {"negated:1", "shared:0"} <= set(m["by_intensity"])
        assert sum(m["classes"][c]["support"] for c in ("conflict", "no_conflict")) == len(rows)
    report = (out / "report.md").read_text()
    assert all(f"| {name} |" in report for name in metrics) and (out / "conflicts.png").stat().st_size > 0
    assert "field 'evidence_b'" in pd.read_parquet(out / "errors" / "errors.parquet").iloc[0]["reason"]
