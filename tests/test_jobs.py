"""Job entrypoints as users run them: `--help`, config errors, and `make demo`'s `ray job submit` path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO


def run_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_help_lists_the_config_fields():
    proc = run_job("jobs/generate.py", "--help")
    assert proc.returncode == 0
    for field in ("engine.backend", "sampling.max_tokens", "output_dir"):
        assert field in proc.stdout


def test_bad_override_is_a_message_not_a_traceback():
    proc = run_job("jobs/generate.py", "--config", "configs/generate.yaml", "sampling.max_tokens=lots")
    assert proc.returncode == 2
    assert "sampling.max_tokens" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_job("jobs/generate.py", "engine.modle=x")
    assert proc.returncode == 2 and "engine.modle" in proc.stderr


@pytest.mark.cluster
@pytest.mark.slow
def test_demo_submits_to_a_real_head(tmp_path):
    """cluster/demo.sh: `ray start --head` on 127.0.0.1, `ray job submit` of the ProX job, summary, stop."""
    import ray

    ray.shutdown()  # `ray stop` ends every Ray process here; this test runs last (see conftest)
    out = tmp_path / "demo"
    env = {**os.environ, "RAYFLOW_DEMO_OUT": str(out), "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:8265"}
    proc = subprocess.run(
        ["bash", "cluster/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=540
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "starting a local Ray head" in proc.stdout and "stopping the local Ray head" in proc.stdout
    assert "20 documents in, 14 kept, 0 errors" in proc.stdout and "before/after" in proc.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_in"] == 20 and stats["documents_kept"] == 14 and stats["errors"] == 0
    rows = pq.read_table(out / "data").to_pylist()
    assert len(rows) == 20 and {r["id"] for r in rows} >= {"web-bees", "web-spam-1"}
    bees = next(r for r in rows if r["id"] == "web-bees")
    assert "Powered by WordPress" in bees["raw_content"] and "Powered by WordPress" not in bees["text"]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["config"]["generator"] == "rules"
    assert run["versions"]["ray"].startswith("2.60")
    # The head it started is gone again.
    ray_cli = str(Path(sys.executable).with_name("ray"))
    probe = subprocess.run([ray_cli, "job", "list", "--address", "http://127.0.0.1:8265"], capture_output=True)
    assert probe.returncode != 0
