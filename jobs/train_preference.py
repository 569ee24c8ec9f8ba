"""Preference optimisation on Ray Train + DeepSpeed: the DPO family (sigmoid, cDPO, hinge, IPO, robust) with a
chosen reference policy (own SFT model, a stronger model, posterior = none, likelihood = prompt removed), or the
whole WSPO weak-to-strong pipeline.

    python jobs/train_preference.py --config configs/train_dpo.yaml output_dir=/abs/out dpo.beta=0.05
    python jobs/train_preference.py --config configs/train_wspo.yaml output_dir=/abs/wspo
    ray job submit --working-dir . -- python jobs/train_preference.py --config configs/train_dpo.yaml \\
        output_dir=/shared/dpo

Reference (and weak-model) log-probs are computed first in one Ray Data pass and cached on disk, so training
holds only the policy. Writes model/ (HF format), errors/errors.jsonl, history.jsonl, summary.json and run.json
to output_dir (WSPO also weak_sft/ and weak_aligned/); checkpoints, TensorBoard events and curves.png under
output_dir/ray/<run>/. The defaults run DPO on the offline tiny model and the shipped example pairs.
"""

from rayflow.train.preference import PreferenceConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(PreferenceConfig, run, check=check, description=__doc__, offline_defaults=True)
