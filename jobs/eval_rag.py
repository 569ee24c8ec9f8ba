"""RAGChecker over RAG answers on Ray Data: claims extracted and checked through the engine stage, the 11
claim-level metrics, RAGChecker's JSON back, a Markdown report and a bar chart.

    python jobs/eval_rag.py --config configs/eval_rag.yaml
    python jobs/eval_rag.py input_path=answers.json output_path=/abs/checked.json checker_name=nli joint_check=false
    ray job submit --working-dir . -- python jobs/eval_rag.py --config configs/eval_rag.yaml output_dir=/abs/out

Writes output_path (RAGChecker's JSON), and in output_dir: report.md, metrics.png, metrics.json,
errors.jsonl, summary.json, run.json and label_cache/ (a rerun skips what is labelled).
"""

from __future__ import annotations

from rayflow.eval.ragchecker.workflow import EvalRagConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(EvalRagConfig, run, check=check, description=__doc__)
