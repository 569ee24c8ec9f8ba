"""The refinement job on Ray Data: end to end on the sample corpus, bad input, resume, and a real kill."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from rayflow.config import parse_cli
from rayflow.data.engine_stage import StageConfig
from rayflow.data.prox.pipeline import ProxRefineConfig, run
from rayflow.workflow import InputError
from tests.conftest import REPO, kill_after_first_part
from tests.data.prox.conftest import SAMPLE, write_shards

# Volatile fields: timings differ run to run.
TIMING = ("doc_s", "chunk_s")


def read_rows(directory):
    rows = pq.read_table(directory).to_pylist()
    for row in rows:
        for key in TIMING:
            row["prox"].pop(key)
    return sorted(rows, key=lambda r: r["id"])


def test_sample_corpus_loses_its_boilerplate(ray_session, tmp_path):
    cfg = ProxRefineConfig(
        input=str(SAMPLE), output_dir=str(tmp_path / "out"), stage=StageConfig(cpus_per_actor=0.5)
    )
    stats = run(cfg).summary
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == stats
    assert stats["documents_in"] == 20 and stats["errors"] == 0
    assert stats["documents_kept"] == 14 and stats["drop_reasons"] == {"doc": 6}
    assert 0.4 < stats["word_retention"] < 0.8
    # ProX's reading cuts `normalize(source_str="(opens in a new window)")` at its `)`, leaving a stray `)`.
    semantics = stats["semantics"]
    assert semantics["mode"] == "strict" and semantics["documents_decided_differently"] == 5
    assert (semantics["doc_level"], semantics["chunk_level"]) == (0, 5)
    rows = {r["id"]: r for r in read_rows(tmp_path / "out" / "data")}
    bees = rows["web-bees"]
    assert (
        bees["kept"]
        and bees["raw_content"].startswith("Menu\n")
        and json.loads(bees["input_fields"]) == {"url": "https://example.org/bees"}
    )
    for boilerplate in ("Menu", "Posted by admin", "Powered by WordPress", "Next post »", "Tags:"):
        assert boilerplate in bees["raw_content"] and boilerplate not in bees["text"]
    assert "When a colony grows too large" in bees["text"]
    assert bees["text"].lstrip().startswith("How Honeybees Decide Where to Live")
    spam = rows["web-spam-1"]
    assert (
        not spam["kept"]
        and spam["text"] == ""
        and spam["drop_reason"] == "doc"
        and "drop_doc()" in spam["doc_program"]
    )
    assert set(rows["web-bees"]) >= {
        "id",
        "text",
        "raw_content",
        "doc_program",
        "chunk_program",
        "kept",
        "n_error_ops",
        "drop_reason",
        "input_fields",
        "prox",
    }
    # A rerun finds everything committed and does nothing.
    again = run(cfg).summary
    assert again["this_run"] == {**again["this_run"], "documents": 0, "resumed_from": 20}
    assert len(pq.read_table(tmp_path / "out" / "data")) == 20


def test_bad_rows_become_error_records_and_the_job_finishes(ray_session, messy_corpus, tmp_path):
    cfg = ProxRefineConfig(
        input=str(messy_corpus),
        output_dir=str(tmp_path / "out"),
        max_line_bytes=4096,
        stage=StageConfig(cpus_per_actor=0.5, batch_size=5),
        fuse_stages=True,
        rows_per_block=4,
    )
    stats = run(cfg).summary
    assert stats["documents_in"] == 28 and stats["documents_refined"] == 21 and stats["errors"] == 7
    assert stats["errors_by_kind"] == {
        "invalid_json": 1,
        "line_too_long": 1,
        "no_text": 3,
        "not_object": 1,
        "not_utf8": 1,
    }
    errors = pq.read_table(tmp_path / "out" / "errors").to_pylist()
    assert {(e["source"], e["row"]) for e in errors} == {("c.jsonl", i) for i in range(2, 9)}
    assert all(e["reason"] for e in errors)
    data = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert {r["prox"]["source"] for r in data} == {"a.jsonl.gz", "b.parquet", "c.jsonl"}
    # Changing what the output means, then resuming into the same directory, is refused before any work.
    with pytest.raises(InputError, match="output_dir: .*different job.*generator"):
        run(cfg.model_copy(update={"generator": "lm"}))


def job(*overrides, **kw):
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.Popen(
        [sys.executable, "jobs/prox_refine.py", "--config", "configs/prox_refine.yaml", *overrides],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kw,
    )


@pytest.mark.slow
def test_killed_driver_then_rerun_equals_an_uninterrupted_run(ray_session, tmp_path):
    """SIGKILL the job's whole process group mid-run (driver and its local Ray), rerun, compare by id with an
    uninterrupted run."""
    n_rows = write_shards(tmp_path / "corpus", n_files=8, copies_per_file=2)
    common = [f"input={tmp_path / 'corpus'}", "stage.batch_size=8", "rows_per_block=8", "tokenizer=null"]
    killed_out = tmp_path / "killed"
    proc = job(*common, f"output_dir={killed_out}")
    kill_after_first_part(proc, killed_out / "data")
    committed = sum(len(pq.read_table(p)) for p in (killed_out / "data").glob("part-*.parquet"))
    assert 0 < committed < n_rows, "the kill must land mid-run"
    assert not (killed_out / "summary.json").exists()
    assert json.loads((killed_out / "run.json").read_text())["status"] == "running"

    # The rerun, in this process on the shared Ray session (the job shell itself is run to completion by
    # test_configs), resumes from the parts the killed run committed.
    config = ["--config", str(REPO / "configs/prox_refine.yaml"), *common, f"output_dir={killed_out}"]
    run(parse_cli(ProxRefineConfig, config))
    stats = json.loads((killed_out / "summary.json").read_text())
    assert stats["this_run"]["resumed_from"] >= committed
    assert stats["documents_in"] == n_rows

    clean = ProxRefineConfig(
        input=str(tmp_path / "corpus"),
        output_dir=str(tmp_path / "clean"),
        stage=StageConfig(cpus_per_actor=0.5),
    )
    run(clean)
    resumed, uninterrupted = read_rows(killed_out / "data"), read_rows(tmp_path / "clean" / "data")
    assert len({r["id"] for r in resumed}) == len(resumed) == n_rows
    assert resumed == uninterrupted
