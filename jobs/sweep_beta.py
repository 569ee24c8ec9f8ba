"""Sweep DPO's KL strength β with Ray Tune and report which β to use.

    python jobs/sweep_beta.py --config configs/sweep_beta.yaml                    # offline, tiny models, CI-sized
    python jobs/sweep_beta.py --config configs/sweep_beta_full.yaml output_dir=/shared/sweeps/b1
    ray job submit --working-dir . -- python jobs/sweep_beta.py --config configs/sweep_beta_full.yaml \\
        output_dir=/shared/sweeps/b1

Reference log-probs are computed once and shared by every trial; each trial trains on Ray Train + DeepSpeed and
reports held-out reward accuracy, raw margin h, log-prob drifts and a KL proxy to Tune (TensorBoard under
output_dir/tune/). After the sweep, one stage generates with each trial's final model in turn and judges it
against the starting model. Writes results.csv, report.md, plots/*.png, summary.json and run.json to output_dir.
Rerunning an interrupted sweep with the same output_dir restores it and finishes only the unfinished trials; a
rerun with other training settings is refused before anything starts. Give a config: the class defaults are a
full 5-β grid, not a quick run.
"""

from rayflow.tune.sweep import SweepConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(SweepConfig, run, check=check, description=__doc__, offline_defaults=False)
