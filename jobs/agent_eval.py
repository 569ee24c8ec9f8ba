"""TestAgent over many targets x Benchmark+ items on Ray: multi-turn sessions steered by the learned policy,
scores (professionalism, stability, dynamism, overall) and one comparative Markdown report.

    python jobs/agent_eval.py --config configs/agent_eval.yaml
    python jobs/agent_eval.py --config configs/agent_eval.yaml 'targets=[{name: mine, engine: {backend: openai,
        model: mine, base_url: "http://127.0.0.1:8000/llm/v1"}}]' policy=random
    ray job submit --working-dir . -- python jobs/agent_eval.py --config configs/agent_eval.yaml output_dir=/abs/out

The benchmark comes from `benchmark` (Benchmark+ JSONL), `documents` (built here) or `qa` (a static set).
Writes benchmark.jsonl, report.md, targets.png, reports/, scores.json, errors.jsonl, summary.json, run.json and
the sessions (resumable: a rerun continues stopped sessions). See docs/agent.md.
"""

from __future__ import annotations

from rayflow.agent.evaluation import AgentEvalConfig, check, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(AgentEvalConfig, run, check=check, description=__doc__, offline_defaults=False)
