"""Train a Safety-J-style judge by iterative critique preference learning: sample k critiques per item,
score them by label correctness and AIU meta-evaluation F1, pair best with worst, train with DPO (Ray Train
+ DeepSpeed), keep the checkpoint with the best validation meta-eval F1, repeat for R rounds.

    python jobs/train_judge.py --config configs/train_judge.yaml output_dir=/abs/out rounds=3
    ray job submit --working-dir . -- python jobs/train_judge.py --config configs/train_judge.yaml output_dir=/shared/j

Writes sft/ (warm start), round_<r>/ (samples.jsonl, pairs.jsonl, model/, TensorBoard events and curves of
the DPO run), best/ (HF format), errors/, summary.json (every round's validation figures) and run.json to
output_dir. The defaults run offline on the tiny model and the shipped bilingual sample. Serve the result:
serve/config.yaml with llm.engine.model=<output_dir>/best.
"""

from rayflow.train.judge import TrainJudgeConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(TrainJudgeConfig, run, check=check, description=__doc__, offline_defaults=True)
