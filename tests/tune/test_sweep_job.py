"""`jobs/sweep_beta.py` with the shipped offline config (more steps, fewer reports), end to end on real parts
(Ray Tune, Ray Train + DeepSpeed, Ray Data, the HF engine): the driver process is killed mid-sweep, and the
rerun restores the experiment, resumes the interrupted trial from its checkpoint, leaves the finished one
alone, and writes the results, the report and the plots."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# A stalled sweep fails the test instead of hanging it.
POLL_LIMIT_S = 480
# The interrupted run starts its own local Ray cluster (all cores, 2 in CI), never one a `ray start` left behind,
# so the kill takes the whole cluster with it.
ENV = {**os.environ, "RAY_ADDRESS": "local"}
STEPS, EVERY = 8, 2  # optimizer steps per trial; a report and a checkpoint every EVERY steps


def job(out: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "jobs/sweep_beta.py",
        "--config",
        "configs/sweep_beta.yaml",
        f"output_dir={out}",
        f"precompute.cache_dir={cache}",
        # More steps than shipped, so the kill below lands while the second trial is still training; a report
        # costs more than a tiny model's step, so report (and checkpoint) every EVERY steps only.
        f"train.max_steps={STEPS}",
        f"train.log_every={EVERY}",
        f"train.checkpoint_every={EVERY}",
        f"train.eval_every={STEPS // 2}",
        # 10 prompts x 2 positions = 20 games: just enough for the length-controlled win rate.
        "evaluation.max_prompts=10",
        "evaluation.lc_min_samples=20",
        "evaluation.sampling.max_tokens=12",
    ]


def trial_dirs(out: Path) -> dict[float, Path]:
    """β -> the Tune trial directory (params.json says which grid point it holds)."""
    found = {}
    for params in (out / "tune").glob("*/params.json"):
        found[json.loads(params.read_text())["point"]["beta"]] = params.parent
    return found


def has_checkpoint(out: Path, trial: int) -> bool:
    """Whether the `trial`-th trial's Train run (grid order) has registered a checkpoint."""
    runs = sorted((out / "train").glob("train-*"))
    return len(runs) > trial and (runs[trial] / "checkpoint_manager_snapshot.json").is_file()


def reports(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow
def test_interrupted_sweep_restores_and_reports(ray_session, tmp_path):
    out, cache, log = tmp_path / "sweep", tmp_path / "logps", tmp_path / "first-run.log"
    # Trials run in grid order, one at a time: β = 0.02, then β = 0.1 (checkpoints every EVERY steps).
    with open(log, "w") as fh:
        first = subprocess.Popen(
            job(out, cache), cwd=REPO, env=ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + POLL_LIMIT_S
        while True:
            assert first.poll() is None, (
                f"the sweep ended before it was interrupted:\n{log.read_text()[-4000:]}"
            )
            assert time.monotonic() < deadline, f"the sweep did not get going:\n{log.read_text()[-4000:]}"
            dirs = trial_dirs(out)
            # Interrupt as soon as the second trial's training has a checkpoint to resume from (watching the
            # Train run, not Tune's record of it, which lags by a few reports) and Tune holds the first trial's
            # whole record.
            if (
                has_checkpoint(out, 1)
                and 0.02 in dirs
                and reports(dirs[0.02])
                and reports(dirs[0.02])[-1]["step"] == STEPS
            ):
                break
            time.sleep(0.5)
    finally:
        # A real kill of the driver and everything in its session (its local Ray cluster goes with it).
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    finished, interrupted = trial_dirs(out)[0.02], trial_dirs(out)[0.1]
    finished_id = reports(finished)[-1]["trial_id"]
    assert reports(finished)[-1]["step"] == STEPS
    exported = out / "models" / finished_id / "model.safetensors"
    before = (len(reports(finished)), exported.stat().st_mtime_ns)
    assert "sweep done" not in log.read_text()

    # The rerun joins the tests' Ray session, as a resubmitted job joins its cluster (one Ray start less).
    rejoin = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    second = subprocess.run(
        job(out, cache), check=False, cwd=REPO, env=rejoin, capture_output=True, text=True, timeout=POLL_LIMIT_S
    )  # fmt: skip
    logs = second.stdout + second.stderr
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "restoring the sweep" in logs

    # The finished trial was not run again: no new reports, its exported model untouched.
    assert (len(reports(finished)), exported.stat().st_mtime_ns) == before
    # The interrupted trial finished without starting over. A restored trial's Tune record starts afresh, and
    # which record it gets depends on where the kill landed (Tune records reports a little after Train makes
    # them): usually training was still going, so the run resumed from its last checkpoint (every EVERY steps)
    # and the record holds the reports from there on, counted as a restart; if the run had already finished, it
    # resumed at its end and the trial handed Tune the run's whole history.
    record = reports(interrupted)
    steps = [r["step"] for r in record]
    assert steps == list(range(steps[0], STEPS + 1, EVERY))
    if record[0]["restarts"] == 1:
        assert steps[0] in range(2 * EVERY, STEPS + 1, EVERY) and all(r["restarts"] == 1 for r in record)
        assert f"resumed from step {steps[0] - EVERY}/{STEPS}" in logs  # the training worker's log line
    else:
        assert steps[0] == EVERY and all(r["restarts"] == 0 for r in record)
        assert f"resumed from step {STEPS}/{STEPS}" in logs
    assert not (out / "train" / ".forwarded").exists()  # the killed attempt's marker was cleared

    # Results: one row per trial with the per-trial metrics and the evaluation stage's numbers.
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(float(r["beta"]) for r in rows) == [0.02, 0.1]
    for r in rows:
        assert r["status"] == "ok" and float(r["steps"]) == STEPS
        for col in (
            "eval_reward_accuracy",
            "eval_h",
            "eval_logratio_chosen",
            "eval_logratio_rejected",
            "eval_kl_proxy",
            "gen_length",
            "win_rate",
            "lc_win_rate",
        ):
            assert r[col] != "", col
        assert float(r["eval_kl_proxy"]) >= 0 and 0 <= float(r["win_rate"]) <= 1
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 2 and summary["errored"] == 0
    if summary["chosen"]["beta"] is not None:
        assert f"**Use β = {summary['chosen']['beta']:g}**" in report and "Rule: " in report
    assert "## Degenerate trials" in report and "## Trials" in report
    for name in ("eval_reward_accuracy", "eval_h", "eval_kl_proxy", "win_rate", "gen_length"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{name}.png)" in report
    # Reference log-probs: computed once for both splits (one Ray Data pass, cached) and read by both trials
    # from prepared/.
    assert len(list(cache.iterdir())) == 1
    assert (
        len((out / "prepared" / "sft" / "train.jsonl").read_text().splitlines())
        == summary["data"]["train_examples"]
    )
    # TensorBoard by default, and the run record of the finished job.
    assert list(finished.glob("events.out.tfevents.*")) and list(interrupted.glob("events.out.tfevents.*"))
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["results"]["summary"] == summary
    assert {"prepare", "trials", "evaluation", "report"} <= set(run["phases"])
    assert "sweep done: 2 trials" in second.stdout
