"""Supervised fine-tuning on {prompt, response} rows: Ray Train + DeepSpeed, HF-format export.

    python jobs/train_sft.py --config configs/train_sft.yaml output_dir=/abs/out train.max_steps=20
    ray job submit --working-dir . -- python jobs/train_sft.py --config configs/train_sft.yaml output_dir=/shared/sft

Writes model/ (HF format: transformers and vLLM load it), errors/errors.jsonl (rejected rows with reasons),
history.jsonl (metrics per logged step), summary.json and run.json to output_dir; checkpoints, TensorBoard
events and curves.png under output_dir/ray/sft/. Rerunning with the same output_dir resumes from the last
checkpoint. The defaults train the offline tiny model on the shipped example rows.
"""

from rayflow.train.sft import SFTConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(SFTConfig, run, check=check, description=__doc__, offline_defaults=True)
