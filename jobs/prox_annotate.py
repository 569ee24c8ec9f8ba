r"""ProX annotation: a teacher (rules, or any engine) writes doc and chunk programs for sampled documents.

    python jobs/prox_annotate.py --config configs/prox_annotate.yaml output_dir=/abs/out
    python jobs/prox_annotate.py --config configs/prox_annotate.yaml input=corpus.jsonl sample=5000 \
        teacher=engine engine.backend=openai engine.model=my-teacher engine.base_url=http://host:8000/v1

Prompts are the ProX job's own (its `lm` settings and the refiner's tokenizer), so a refiner trained on them
plugs into the job unchanged. Keeps only programs the parser reads. Writes train.parquet, heldout.parquet,
errors.jsonl (rejected programs with reasons), summary.json and run.json. See docs/prox_refiner.md.
"""

from rayflow.data.prox.annotate import AnnotateConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(AnnotateConfig, run, check=check, description=__doc__, offline_defaults=False)
