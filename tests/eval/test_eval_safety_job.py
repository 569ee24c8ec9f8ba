"""jobs/eval_safety.py as users run it (a subprocess joining a running Ray), on the shipped config with the hf
backend and the reference preset (Llama Guard 3's native prompt): every input line ends in judgements or
errors, and the metrics, PR-AUC and ROC-AUC included, follow from the judgements."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from rayflow.eval.safety.label_eval import parse_row, read_rows
from rayflow.eval.safety.metrics import label_report
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_parse_row_names_the_problem():
    assert parse_row('{"query": "q", "response": "r", "label": "Unsafe"}', "f:1")[0] == {
        "id": "f:1", "lang": "en", "query": "q", "response": "r", "label": "unsafe"}  # fmt: skip
    assert parse_row('{"query": "你好", "response": "r", "label": "安全"}', "f:2")[0]["lang"] == "zh"
    assert "'response'" in parse_row('{"query": "q", "label": "safe"}', "x")[1]
    assert "'label'" in parse_row('{"query": "q", "response": "r", "label": "maybe"}', "x")[1]
    assert "'lang'" in parse_row('{"query": "q", "response": "r", "label": "safe", "lang": "fr"}', "x")[1]
    assert "invalid JSON" in parse_row("{", "x")[1]


def test_job_on_the_shipped_config(ray_session, tmp_path):
    data = tmp_path / "data.jsonl"
    shutil.copy(REPO / "examples/safety/labelled.jsonl", data)
    with data.open("a") as f:
        f.write('{"query": "q", "response": "r", "label": "maybe"}\nnot json\n\n')
        f.write(json.dumps({"id": "long", "query": "word " * 1500, "response": "r", "label": "safe"}) + "\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "jobs/eval_safety.py", "--config", "configs/eval_safety.yaml", f"input={data}",
         f"output_dir={out}", "engine.backend=hf", "scheme=llamaguard", "judge.preset=reference",
         "judge.label_max_tokens=8", "stage.cpus_per_actor=0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        # The job joins the tests' Ray session, as a submitted job joins its cluster (one Ray start less).
        env={**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((out / "summary.json").read_text())
    assert stats == {"rows_in": 19, "judged": 16, "errors": 3}
    errors = pd.read_parquet(out / "errors" / "errors.parquet")
    assert sorted(errors["line"]) == [17, 18, 20]  # file lines, blank line skipped
    assert any("context" in r or "longer" in r for r in errors["reason"])
    judged = pd.read_parquet(out / "judgements.parquet")
    assert list(judged["id"])[:2] == ["en-01", "en-02"]
    assert set(judged["prompt_version"]) == {"llamaguard/native-3"}
    written = json.loads((out / "metrics.json").read_text())
    assert (written["preset"], written["native_format"], written["parsing"]) == (
        "reference",
        True,
        "reference",
    )
    metrics = written["metrics"]
    assert metrics == json.loads(json.dumps(label_report(judged.to_dict("records"))))
    assert metrics["by_lang"]["zh"]["n"] == 8 and metrics["overall"]["n"] == 16
    # Llama Guard's first token always carries p(unsafe): every row is scored, both classes are present
    assert metrics["overall"]["scored"] == 16 and 0.0 <= metrics["overall"]["roc_auc"] <= 1.0
    report = (out / "report.md").read_text()
    assert (out / "confusion.png").stat().st_size > 1000 and "| zh | 8 |" in report and "PR-AUC" in report
    assert json.loads((out / "run.json").read_text())["status"] == "ok"


def test_read_rows_reports_a_missing_input():
    with pytest.raises(FileNotFoundError, match="nope"):
        read_rows("nope.jsonl")
