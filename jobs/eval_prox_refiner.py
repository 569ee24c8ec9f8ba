"""ProX refiner evaluation against its teacher on the annotation's held-out split.

    python jobs/eval_prox_refiner.py --config configs/eval_prox_refiner.yaml data=/abs/annotation

Doc-level P/R/F1 (drop positive), pooled chunk line-removal P/R/F1, normalize exact-match share, parse-failure
rate; writes summary.json, report.md (examples where refiner and teacher disagree), disagreements.jsonl, run.json.
"""

from rayflow.data.prox.refiner_eval import RefinerEvalConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(RefinerEvalConfig, run, check=check, description=__doc__, offline_defaults=False)
