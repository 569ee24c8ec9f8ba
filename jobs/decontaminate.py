"""Decontamination: evaluation sets against a corpus with the GPT-3, PaLM and Llama-2 coverage n-gram rules on
Ray Data; per-example verdicts, CONDA-format evidence, optional Min-K% Prob and a cleaned corpus.

    python jobs/decontaminate.py --config configs/decontaminate.yaml output_dir=/abs/out
    python jobs/decontaminate.py --config configs/decontaminate.yaml corpus=s3://bucket/corpus/ filter.enabled=true

Writes data/ and errors/ parts (cleaned/ when filtering), verdicts.parquet, report.md, summary.json, run.json and
the evidence database (default <output_dir>/evidence.db). Rerunning with the same output_dir resumes the scan.
See docs/decontamination.md.
"""

from __future__ import annotations

from rayflow.data.decontam.pipeline import DecontamConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(DecontamConfig, run, check=check, description=__doc__)
