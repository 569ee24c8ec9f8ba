"""The shipped lm config, run as users run it: the job through vLLM inside Ray Data (its `--help` and command-line
errors are tested with every job's in tests/test_jobs.py)."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.data.prox.conftest import SAMPLE


def run_job(*args, timeout=300, ray_address="local"):
    env = {**os.environ, "RAY_ADDRESS": ray_address, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run(
        [sys.executable, "jobs/prox_refine.py", *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.vllm
def test_lm_config_runs_through_vllm_actors(ray_session, tmp_path):
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:6]))
    out = tmp_path / "out"
    # The job joins the tests' Ray session, as a submitted job joins its cluster (one Ray start less).
    address = ray_session.get_runtime_context().gcs_address
    proc = run_job(
        "--config", "configs/prox_refine_lm.yaml", f"input={subset}", f"output_dir={out}", ray_address=address
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    stats = json.loads((out / "summary.json").read_text())
    assert stats["documents_in"] == 6 and stats["errors"] == 0
    assert (
        stats["tokens_in"] > 0
        and stats["doc_stage"]["prompt_tokens"] > 0
        and stats["chunk_stage"]["chunks"] >= 6
    )
    rows = pq.read_table(out / "data").to_pylist()
    assert len(rows) == 6 and all(r["doc_program"] is not None for r in rows)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["config"]["lm"]["doc_engine"]["backend"] == "vllm"
