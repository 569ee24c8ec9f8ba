"""TestAgent's learned question-type policy vs random (and fixed-order) questioning, in simulation.

Two simulated targets of known abilities; for each policy, the number of turns before its score estimate
separates them with 95% confidence (|mean_a - mean_b| > 1.96 sqrt(u_a^2 + u_b^2), and stays apart to turn
40; a pair never apart counts 40), averaged over 300 seeded session pairs. The policy is the shipped one
(`examples/agent/policy.json`, from `configs/train_agent_policy.yaml`), measured on simulator settings it
was not trained on: other abilities, noise levels, repeat correlation and points per item.
ratio = learned turns / random turns (lower is better). Run: `python benchmarks/agent_policy.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.agent.policy import FixedPolicy, RandomPolicy, load_policy
from rayflow.agent.simulation import SimConfig
from rayflow.agent.training import SeparationConfig, separation

REPO = Path(__file__).resolve().parents[1]
# Unseen in training (deepen 0.05 / others 0.3, correlation 0.7, 3 points, abilities 0.1..0.9, 12 turns).
SIM = SimConfig(
    informative="deepen", sigma_informative=0.08, sigma_other=0.25, repeat_correlation=0.5, points=4
)
MEASURE = SeparationConfig(abilities=(0.45, 0.65), pairs=300, max_turns=40, seed=7_000_000)


def main() -> None:
    learned = load_policy(REPO / "examples/agent/policy.json")
    results = {p.name: separation(p, SIM, MEASURE) for p in (learned, RandomPolicy(), FixedPolicy())}
    detail = {"sim": SIM.model_dump(), "measure": MEASURE.model_dump()}
    path = write_result(
        "agent_policy",
        {"label": "learned LinUCB policy", "value": results["learned"]["mean_turns"], **results["learned"], **detail},
        {"label": "random question types", "value": results["random"]["mean_turns"], **results["random"],
         "fixed_order": results["fixed"],
         "learned_over_fixed": results["learned"]["mean_turns"] / results["fixed"]["mean_turns"]},
        unit="turns to separate two targets at 95%",
        higher_is_better=False,
    )  # fmt: skip
    print({k: v["mean_turns"] for k, v in results.items()}, "->", path)


if __name__ == "__main__":
    main()
