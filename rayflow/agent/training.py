"""train_agent_policy: the LinUCB question-type policy, learned over simulated sessions run in parallel on Ray.

    policy, history = train_policy(TrainPolicyConfig())          # plain Python, one process
    run(TrainPolicyConfig(workers=4))                            # the job: rounds fanned out as Ray tasks

Batched LinUCB: each round, the current policy (exploring with `alpha`) runs `sessions_per_round` simulated
sessions split over `workers` tasks; each task returns its sufficient statistics (per action, the sums of
x x^T and r x) and the driver adds them to the policy. Seeds are fixed per (round, session), so a run is
reproducible whatever the number of workers. Outputs: policy.json (what the agent app loads), curve.png (mean
reward per round), summary.json (turns to separate two targets: learned vs random vs fixed), run.json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from rayflow.agent.policy import FixedPolicy, LinUCBPolicy, RandomPolicy
from rayflow.agent.simulation import SimConfig, SimTarget, separation_turn, simulate
from rayflow.config import Config
from rayflow.workflow import Result, Workflow

log = logging.getLogger(__name__)


class SeparationConfig(Config):
    """The measure of a policy: turns until two targets' scores are 95% apart (capped at max_turns)."""

    abilities: tuple[float, float] = Field((0.4, 0.6), description="the two targets' true abilities")
    pairs: int = Field(200, ge=1, description="session pairs averaged")
    max_turns: int = Field(40, ge=2, description="turns per session; a pair never apart counts this many")
    seed: int = Field(1_000_000, ge=0, description="first seed of the pairs")


class TrainPolicyConfig(Config):
    """Learn the question-type policy over simulated sessions."""

    output_dir: str = Field(
        "outputs/train_agent_policy", description="policy.json, curve.png, summary.json, run.json"
    )
    sim: SimConfig = SimConfig()
    targets: list[SimTarget] = Field(
        [SimTarget(ability=a / 10) for a in range(1, 10)],
        description="simulated targets, cycled over sessions",
    )
    max_turns: int = Field(12, ge=2, description="turns per simulated session (the first a seed question)")
    rounds: int = Field(20, ge=1, description="policy updates")
    sessions_per_round: int = Field(100, ge=1, description="simulated sessions per round")
    workers: int = Field(2, ge=1, description="Ray tasks per round")
    alpha: float = Field(0.05, ge=0, description="LinUCB exploration width while training")
    ridge: float = Field(1.0, gt=0, description="LinUCB ridge: A_a starts at ridge * I")
    seed: int = Field(0, ge=0, description="seed of the first session")
    evaluation: SeparationConfig = SeparationConfig()


def collect(
    policy_json: dict, cfg: TrainPolicyConfig, seeds: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run one simulated session per seed with `policy_json` (frozen, exploring); returns the summed
    statistics (dA, db) and the mean reward."""
    policy = LinUCBPolicy(alpha=cfg.alpha, A=policy_json["A"], b=policy_json["b"])
    stats = LinUCBPolicy(ridge=1.0)
    stats.A[:] = 0.0
    rewards = []
    for seed in seeds:
        target = cfg.targets[seed % len(cfg.targets)]
        rewards += simulate(policy, target, cfg.sim, cfg.max_turns, seed, learner=stats).rewards
    return stats.A, stats.b, float(np.mean(rewards)) if rewards else 0.0


Map = Callable[[Callable, list], list]


def train_policy(cfg: TrainPolicyConfig, pmap: Map | None = None) -> tuple[LinUCBPolicy, list[float]]:
    """The trained policy (deployed greedy) and the mean reward of each round. `pmap(fn, args_list)` runs
    the workers' chunks (default: one after another here)."""
    pmap = pmap or (lambda fn, args: [fn(*a) for a in args])
    policy = LinUCBPolicy(alpha=cfg.alpha, ridge=cfg.ridge)
    curve = []
    for r in range(cfg.rounds):
        seeds = [cfg.seed + r * cfg.sessions_per_round + s for s in range(cfg.sessions_per_round)]
        chunks = [seeds[w :: cfg.workers] for w in range(cfg.workers)]
        snapshot = policy.to_json()
        results = pmap(collect, [(snapshot, cfg, c) for c in chunks if c])
        for dA, db, _ in results:
            policy.merge(dA, db)
        curve.append(float(np.mean([m for _, _, m in results])))
        log.info("round %d/%d: mean reward %.4f", r + 1, cfg.rounds, curve[-1])
    info = {"rounds": cfg.rounds, "sessions": cfg.rounds * cfg.sessions_per_round, "sim": cfg.sim.model_dump(),
            "max_turns": cfg.max_turns, "alpha": cfg.alpha, "seed": cfg.seed}  # fmt: skip
    return LinUCBPolicy(alpha=0.0, A=policy.A, b=policy.b, info=info), curve


def separation(policy, sim: SimConfig, cfg: SeparationConfig) -> dict:
    """Mean turns (and their spread) `policy` needs to tell the two targets apart at 95%, over `cfg.pairs`."""
    low, high = (SimTarget(ability=a) for a in cfg.abilities)
    turns = []
    for i in range(cfg.pairs):
        a = simulate(policy, low, sim, cfg.max_turns, cfg.seed + 2 * i).scores
        b = simulate(policy, high, sim, cfg.max_turns, cfg.seed + 2 * i + 1).scores
        turns.append(separation_turn(a, b) or cfg.max_turns)
    return {"mean_turns": float(np.mean(turns)), "median_turns": float(np.median(turns)),
            "never_apart": int(sum(t >= cfg.max_turns for t in turns)), "pairs": cfg.pairs}  # fmt: skip


def plot_curve(curve: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(range(1, len(curve) + 1), curve, marker="o")
    ax.set(xlabel="round", ylabel="mean reward per turn", title="LinUCB question-type policy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: TrainPolicyConfig) -> Result:
    """Train on the current Ray cluster (one task per worker chunk per round); write the policy and report."""
    import ray

    collect_remote = ray.remote(num_cpus=1)(collect)

    def pmap(fn, args):
        return ray.get([collect_remote.remote(*a) for a in args])

    out = Path(cfg.output_dir)
    with Workflow("train_agent_policy", cfg, out) as wf:
        with wf.phase("train"):
            policy, curve = train_policy(cfg, pmap)
        policy.save(out / "policy.json")
        plot_curve(curve, out / "curve.png")
        with wf.phase("evaluate"):
            measured = {
                p.name: separation(p, cfg.sim, cfg.evaluation)
                for p in (policy, RandomPolicy(), FixedPolicy())
            }
        ratio = measured["learned"]["mean_turns"] / measured["random"]["mean_turns"]
        summary = {"sessions": cfg.rounds * cfg.sessions_per_round, "rewards": curve, "separation": measured,
                   "learned_over_random_turns": ratio, "policy": str(out / "policy.json")}  # fmt: skip
        return wf.finish(summary, f"policy after {summary['sessions']} simulated sessions: "
                                  f"{measured['learned']['mean_turns']:.1f} turns to separate vs "
                                  f"{measured['random']['mean_turns']:.1f} random ({ratio:.2f}x)")  # fmt: skip
