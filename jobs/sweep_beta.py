"""Sweep DPO's KL strength β with Ray Tune and report which β to use.

    python jobs/sweep_beta.py --config configs/sweep_beta.yaml                    # offline, tiny models, CI-sized
    python jobs/sweep_beta.py --config configs/sweep_beta_full.yaml output_dir=/shared/sweeps/b1
    ray job submit --working-dir . -- python jobs/sweep_beta.py --config configs/sweep_beta_full.yaml \\
        output_dir=/shared/sweeps/b1

Reference log-probs are computed once and shared by every trial; each trial trains on Ray Train + DeepSpeed and
reports held-out reward accuracy, raw margin h, log-prob drifts and a KL proxy to Tune (TensorBoard under
output_dir/tune/). After the sweep, one stage generates with each trial's final model in turn and judges it
against the starting model. Writes results.csv, report.md, plots/*.png, summary.json and run.json to output_dir.
Rerunning an interrupted sweep with the same output_dir restores it and finishes only the unfinished trials.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from rayflow.config import parse_cli
from rayflow.runinfo import RunRecord
from rayflow.tune.sweep import SweepConfig, SweepConflict, check_resumable, run_sweep


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(SweepConfig, argv, description=__doc__)
    out = Path(cfg.output_dir).resolve()
    try:
        # Before the run record: a refused rerun must not overwrite the existing sweep's run.json.
        check_resumable(cfg, out)
    except SweepConflict as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    ray.init()
    with RunRecord(cfg.output_dir, cfg, job="sweep_beta") as run:
        with run.phase("sweep"):
            summary = run_sweep(cfg)
        run.set("summary", summary)
    chosen = summary["chosen"]
    verdict = (
        f"use beta={chosen['beta']:g} ({chosen['metric']}={chosen['value']:.3f})"
        if chosen["beta"]
        else (f"no beta chosen: {chosen['rule']}")
    )
    print(
        f"sweep done: {summary['trials']} trials ({summary['errored']} errored, {summary['degenerate']} "
        f"degenerate); {verdict} -> {out / 'report.md'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
