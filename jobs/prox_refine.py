"""ProX refinement: a corpus (JSONL/Parquet) -> doc programs -> chunk programs -> refined Parquet, on Ray Data.

    python jobs/prox_refine.py --config configs/prox_refine.yaml output_dir=/abs/out
    python jobs/prox_refine.py --config configs/prox_refine_lm.yaml input=s3://bucket/rpv2/ text_field=raw_content
    ray job submit --working-dir . -- python jobs/prox_refine.py --config configs/prox_refine.yaml output_dir=/shared/x

Writes data/ and errors/ (Parquet parts), summary.json and run.json to output_dir. Rerunning with the same
output_dir resumes: rows already committed are skipped (overwrite=true starts over). See docs/prox.md.
"""

from __future__ import annotations

from rayflow.data.prox.pipeline import ProxRefineConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(ProxRefineConfig, run, check=check, description=__doc__)
