"""ProX refiner training: SFT of a causal LM on prox_annotate's (prompt, program) pairs, Ray Train + DeepSpeed.

    python jobs/train_prox_refiner.py --config configs/train_prox_refiner.yaml model=/abs/base output_dir=/abs/out

Writes model/ (or model_doc/ and model_chunk/ with levels=separate; HF format with refiner.json: the prompt
preset and settings it was trained for), runs/<model>/history.jsonl, summary.json and run.json. The whole tiny
refiner build (base model, annotation, training, evaluation) is `python benchmarks/prox_refiner.py`.
"""

from rayflow.train.prox_refiner import RefinerTrainConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(RefinerTrainConfig, run, check=check, description=__doc__, offline_defaults=False)
