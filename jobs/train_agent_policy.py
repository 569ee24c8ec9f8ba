"""Train TestAgent's question-type policy (LinUCB) over simulated sessions run in parallel on Ray.

    python jobs/train_agent_policy.py --config configs/train_agent_policy.yaml
    python jobs/train_agent_policy.py rounds=40 workers=4 sim.informative=challenge output_dir=/abs/out
    ray job submit --working-dir . -- python jobs/train_agent_policy.py --config configs/train_agent_policy.yaml

Writes policy.json (what serve/agent.py and jobs/agent_eval.py load), curve.png, summary.json (turns to tell
two simulated targets apart: learned vs random vs fixed order) and run.json to output_dir. See docs/agent.md.
"""

from __future__ import annotations

from rayflow.agent.training import TrainPolicyConfig, run
from rayflow.workflow import job_main

if __name__ == "__main__":
    job_main(TrainPolicyConfig, run, description=__doc__)
