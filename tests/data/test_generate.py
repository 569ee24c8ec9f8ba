"""Batch generation: line parsing, the engine stage without Ray, and the workflow on a local Ray session."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayflow.data.engine_stage import EngineStage, StageConfig
from rayflow.data.generate import GenerateConfig, GenerateTask, parse_line, run
from rayflow.llm import EngineConfig, SamplingParams
from rayflow.workflow import InputError
from tests.conftest import REPO

GOOD = [
    json.dumps({"id": "a", "prompt": "The cat"}),
    json.dumps({"id": 7, "prompt": [{"role": "user", "content": "Hi"}]}),
    json.dumps({"prompt": "no id here"}),
]
BAD = [
    "{not json",
    json.dumps(["a list"]),
    json.dumps({"id": "x"}),
    json.dumps({"id": "y", "prompt": "  "}),
    json.dumps({"id": "z", "prompt": [{"role": "user"}]}),
    json.dumps({"id": "w", "prompt": 3}),
    json.dumps({"id": "long", "prompt": "word " * 700}),  # over the context length: the engine rejects it
]


def test_parse_line_reasons():
    assert parse_line(GOOD[0])[0] == {"id": "a", "prompt": "The cat", "is_chat": False}
    assert parse_line(GOOD[1])[0]["id"] == "7" and parse_line(GOOD[1])[0]["is_chat"]
    assert parse_line(GOOD[2])[0]["id"] == parse_line(GOOD[2])[0]["id"]  # stable hash id
    reasons = [parse_line(line)[1] for line in BAD[:-1]]
    assert "invalid JSON" in reasons[0]
    assert "JSON object" in reasons[1]
    assert reasons[2] == "missing field 'prompt'"
    assert reasons[3] == "field 'prompt' is empty"
    assert "role" in reasons[4]
    assert "int" in reasons[5]


def test_engine_stage_keeps_every_row(tiny_model):
    stage = EngineStage(
        [
            GenerateTask(
                EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"),
                SamplingParams(max_tokens=4),
            )
        ]
    )
    out = stage(pa.table({"text": GOOD + BAD})).to_pandas()
    assert len(out) == len(GOOD) + len(BAD)
    ok = out[out["error"].isna()]
    assert sorted(ok["id"]) == sorted(["a", "7", parse_line(GOOD[2])[0]["id"]])
    assert (ok["num_generated_tokens"] <= 4).all()
    errors = out[out["error"].notna()]
    assert len(errors) == len(BAD)
    assert errors["error"].str.contains("engine rejected").sum() == 1


def test_workflow_on_ray_writes_every_row_once(ray_session, tiny_model, tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join(GOOD * 3 + BAD) + "\n\n")  # blank lines are not rows
    cfg = GenerateConfig(
        input=str(src),
        output_dir=str(tmp_path / "out"),
        engine=EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"),
        sampling=SamplingParams(max_tokens=4),
        stage=StageConfig(batch_size=4, cpus_per_actor=0.5),
    )
    result = run(cfg)
    assert result.summary == {"rows_in": 16, "generated": 9, "errors": 7}
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == result.summary
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "ok"
    gens = pq.read_table(tmp_path / "out" / "generations").to_pandas()
    errs = pq.read_table(tmp_path / "out" / "errors").to_pandas()
    assert len(gens) == 9 and len(errs) == 7
    assert set(errs.columns) == {"error", "raw"}
    # A rerun replaces the outputs rather than appending to them.
    assert run(cfg).summary == result.summary
    assert len(pq.read_table(tmp_path / "out" / "generations")) == 9


def test_missing_input_or_model_is_one_line_before_ray(tmp_path):
    with pytest.raises(InputError, match="input: .*nowhere.jsonl"):
        run(GenerateConfig(input=str(tmp_path / "nowhere.jsonl"), output_dir=str(tmp_path)))
    out = tmp_path / "out"
    for arg, key in (
        (f"input={tmp_path / 'nowhere.jsonl'}", "input"),
        (f"engine.model={tmp_path}/m", "engine.model"),
    ):
        proc = subprocess.run(
            [sys.executable, "jobs/generate.py", arg, f"output_dir={out}"],
            check=False,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert (
            proc.returncode == 2
            and proc.stderr.startswith(f"error: {key}: ")
            and "Traceback" not in proc.stderr
        )
    assert not out.exists()  # nothing started: no run.json
