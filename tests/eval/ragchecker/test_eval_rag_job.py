"""jobs/eval_rag.py end to end on Ray Data with the tiny model (hf backend): the shipped config as users run it
(a subprocess joining the tests' Ray session), a rerun that the label cache answers, and the NLI checker."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from rayflow.config import load_config
from rayflow.eval.ragchecker import compute_metrics
from rayflow.eval.ragchecker.metrics import LABELS
from rayflow.eval.ragchecker.workflow import EvalRagConfig, run
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def cache_lines(out):
    return sum(len(p.read_text().splitlines()) for p in (out / "label_cache").glob("*.jsonl"))


def test_eval_rag_on_the_shipped_config_then_rerun_and_nli(ray_session, tmp_path, rayflow_logging):
    data = tmp_path / "inputs.jsonl"
    shutil.copy(REPO / "examples/ragchecker/inputs.jsonl", data)
    with data.open("a") as f:  # an answer too long for the extractor's context, and a broken line
        f.write(json.dumps({"query_id": "long", "query": "q", "gt_answer": "word " * 1500, "response": "r",
                            "retrieved_context": []}) + "\n{broken\n")  # fmt: skip
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "jobs/eval_rag.py", "--config", "configs/eval_rag.yaml", f"input_path={data}",
         f"output_dir={out}", "stage.cpus_per_actor=0.5", "metrics=overall_metrics,retriever_metrics,generator_metrics"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["items_in"], summary["evaluated"], summary["errors"]) == (7, 4, 3)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["query_id"] for e in errors] == ["q5", None, "long"]  # read errors first, then the refused item
    assert "gt_answer: missing" in errors[0]["reason"] and "invalid JSON" in errors[1]["reason"]
    assert "refused" in errors[2]["reason"]
    checked = json.loads((out / "results.json").read_text())
    results = checked["results"]
    assert [r["query_id"] for r in results] == ["q1", "q2", "q3", "q4"]
    shipped = json.loads((REPO / "examples/ragchecker/labelled.json").read_text())["results"]
    assert results[0]["response_claims"] == shipped[0]["response_claims"]  # given claims are not re-extracted
    for r in results:  # every label field, shaped claims x chunks, and the metrics follow from the labels
        assert len(r["answer2response"]) == len(r["response_claims"])
        assert len(r["response2answer"]) == len(r["gt_answer_claims"])
        assert all(len(row) == len(r["retrieved_context"]) for row in r["retrieved2response"])
        assert all(len(row) == len(r["retrieved_context"]) for row in r["retrieved2answer"])
    assert checked["metrics"] == summary["metrics"] == compute_metrics(results)
    assert "| generator_metrics | faithfulness |" in (out / "report.md").read_text()
    assert (out / "metrics.png").stat().st_size > 5000 and cache_lines(out) > 0

    # A rerun into the same output_dir: everything is in the label cache, nothing new is written.
    lines = cache_lines(out)
    overrides = [f"input_path={data}", f"output_dir={out}", "stage.cpus_per_actor=0.5"]
    cfg = load_config(EvalRagConfig, REPO / "configs/eval_rag.yaml", overrides)
    again = run(cfg)
    assert cache_lines(out) == lines
    assert json.loads((out / "results.json").read_text()) == checked and again.summary == summary

    # The NLI checker (a tiny local classifier) on faithfulness alone: the /v1/query answer without a ground
    # truth (q5) is evaluated too, and so is the long one (its ground truth is never read); only
    # retrieved2response is computed.
    nli = run(cfg.model_copy(update={"checker_name": "nli:tiny", "metrics": ["faithfulness"], "joint_check": False,
                                     "output_dir": str(tmp_path / "nli")}))  # fmt: skip
    assert (nli.summary["evaluated"], nli.summary["errors"]) == (6, 1)
    results = json.loads((tmp_path / "nli" / "results.json").read_text())["results"]
    assert [r["query_id"] for r in results] == ["q1", "q2", "q3", "q4", "q5", "long"]
    assert all(r["retrieved2response"] is not None and r.get("answer2response") is None for r in results)
    assert {lab for r in results for row in r["retrieved2response"] for lab in row} <= set(LABELS)
    assert set(nli.summary["metrics"]["generator_metrics"]) == {"faithfulness"}
