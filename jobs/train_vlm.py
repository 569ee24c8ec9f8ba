"""OmniBal balanced vision-language training of the tiny VLM on Ray Train + DeepSpeed.

    python jobs/train_vlm.py --config configs/train_vlm.yaml output_dir=/abs/out
    python jobs/train_vlm.py --config configs/train_vlm.yaml balance.balance=random partition=parameters
    ray job submit --working-dir . -- python jobs/train_vlm.py --config configs/train_vlm.yaml output_dir=/shared/x

Plans on the driver (length index, ISF budget search, schedule metrics, stage partition search and
per-stage recompute plan), then trains in `mode` (pipeline: DeepSpeed pipeline engine with the planned
stages; zero: data-parallel ZeRO) through rayflow's one training driver. Writes plan.json, summary.json,
errors.jsonl, the HF-format model in hf/, checkpoints, TensorBoard events and curves.png under
output_dir/checkpoints/train_vlm, and run.json. The defaults train on synthetic data, offline.
"""

from rayflow.train.omnibal.train import TrainVLMConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(TrainVLMConfig, run, check=check, description=__doc__, offline_defaults=True)
