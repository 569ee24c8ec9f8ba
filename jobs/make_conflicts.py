"""ECon conflict-set generation: questions -> candidate answers -> evidence -> NLI validation -> typed pairs.

    python jobs/make_conflicts.py --config configs/make_conflicts.yaml output_dir=/abs/out
    python jobs/make_conflicts.py input=questions.jsonl engine.model=/models/llm validation.model=microsoft/deberta-large-mnli
    ray job submit --working-dir . -- python jobs/make_conflicts.py --config configs/make_conflicts.yaml output_dir=/abs/out

Writes pairs.jsonl (the conflict set), candidates.jsonl, errors/, report.md, summary.json and run.json.
"""

from __future__ import annotations

from rayflow.eval.conflicts.make import MakeConflictsConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(MakeConflictsConfig, run, check=check, description=__doc__)
