"""OmniBal at InternVL scale, simulated: ISF + searched stages + per-stage recompute vs random batches + `parameters`.

InternVL-Chat-1.5-like model (InternViT-6B + InternLM2-20B, FLOP-count cost profile on A100-80GB at 45% MFU,
ZeRO-1 over the data-parallel ranks), 8 data-parallel x 4 pipeline stages, 16 micro-batches per step, on
InternVL-like lengths synthesised from the spec's statistics. Each step's time is its slowest rank's
simulated 1F1B makespan; throughput is samples per simulated second over an epoch.

- baseline: seeded random batches of 4 samples padded to the longest, DeepSpeed's `parameters` split,
  global full recompute (InternVL's setting, which a `parameters` split needs to fit);
- candidate: ISF groups (budgets found by the Q search), searched partition, per-stage recompute plan.

Also writes the ablations (each part alone) and `benchmarks/results/omnibal_rank_load.png` (per-rank load
before and after balancing). Run: `python benchmarks/omnibal_sim.py [--samples 70000]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_result  # noqa: E402

from rayflow.train.omnibal.costmodel import flops_profile  # noqa: E402
from rayflow.train.omnibal.partition import (  # noqa: E402
    MemorySpec,
    parameters_partition,
    search_partition,
    simulate_schedule,
)
from rayflow.train.omnibal.qsearch import search_q  # noqa: E402
from rayflow.train.omnibal.schedule import BalanceConfig, GroupWork, build_schedule  # noqa: E402
from rayflow.train.omnibal.synthetic import internvl_like_lengths  # noqa: E402

DP, PP, MICRO, BUDGET = 8, 4, 16, 72e9  # 80 GB less 10% headroom


def bound(schedule) -> GroupWork:
    w = schedule.work
    return GroupWork(*(np.array([a.max()]) for a in (w.tiles, w.tokens, w.run_tokens, w.sq_tokens)))


def plot(rnd, isf, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    steps = 30
    for ax, (label, run) in zip(axes, [("random batches + parameters split", rnd), ("OmniBal", isf)]):
        load = run["rank_seconds"][:steps]
        step = load.max(axis=1, keepdims=True)
        im = ax.imshow((load / step).T, aspect="auto", vmin=0.5, vmax=1.0, cmap="viridis")
        ax.set_title(f"{label}\nmean step {run['mean_step_seconds']:.1f} s")
        ax.set_xlabel("step")
    axes[0].set_ylabel("data-parallel rank")
    fig.colorbar(im, ax=axes, label="rank time / step time (1 = the rank everyone waits for)")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=70000)
    args = parser.parse_args()
    profile = flops_profile(state_bytes_per_param=4 + 12 / DP)  # bf16 weights + grads, fp32 Adam sharded by ZeRO-1
    cost = profile.group_seconds
    vit, tok = internvl_like_lengths(args.samples, seed=0)

    t0 = time.perf_counter()
    q = search_q(vit, tok, ranks=DP, micro_per_step=MICRO, samples_per_group=4, objective="cost", cost=cost)
    q_seconds = time.perf_counter() - t0
    isf = build_schedule(vit, tok, BalanceConfig(isf=q.isf), ranks=DP, micro_per_step=MICRO, epoch=0, cost=cost)
    rnd = build_schedule(vit, tok, BalanceConfig(balance="random", batch_size=4), ranks=DP, micro_per_step=MICRO,
                         epoch=0, cost=cost)
    isf_report, rnd_report = isf.report(tok, cost), rnd.report(tok, cost)

    workloads = [isf.work.take(isf.assignment[t, r]) for t in range(2) for r in range(2)]
    t0 = time.perf_counter()
    search = search_partition(profile, PP, workloads, MemorySpec(BUDGET, bound(isf)))
    searched, params = search.best.parts, parameters_partition(profile, PP)

    def run(schedule, parts, recompute):
        return simulate_schedule(profile, parts, schedule, MemorySpec(BUDGET, bound(schedule)), recompute)

    base = run(rnd, params, "full")
    cand = run(isf, searched, "plan")
    ablations = {
        "isf + parameters + full recompute": run(isf, params, "full"),
        "random + searched + planned recompute": run(rnd, searched, "plan"),
        "isf + searched + full recompute": run(isf, searched, "full"),
        "random + parameters + planned recompute": run(rnd, params, "plan"),
    }

    def summary(r: dict) -> dict:
        return {k: v for k, v in r.items() if k != "rank_seconds"}

    candidate = {"label": "isf + searched partition + per-stage recompute", "value": cand["samples_per_second"],
                 "parts": list(searched), "isf": q.isf.model_dump(), **isf_report, **summary(cand),
                 "q_search_seconds": q_seconds, "partition_search": {"method": search.method,
                                                                     "evaluated": search.evaluated,
                                                                     "seconds": search.seconds}}
    baseline = {"label": "random batches (4) + parameters partition + full recompute",
                "value": base["samples_per_second"], "parts": list(params), **rnd_report, **summary(base)}
    candidate["ablations"] = {k: {"samples_per_second": v["samples_per_second"],
                                  "speedup": v["samples_per_second"] / base["samples_per_second"],
                                  "fits_memory": v["fits_memory"]} for k, v in ablations.items()}
    for key in ("dist_vit", "dist_llm", "pad", "max_mean"):
        candidate[key] = isf_report[key]
    path = write_result("omnibal_sim", candidate, baseline, unit="samples per simulated second",
                        higher_is_better=True)
    plot(base, cand, RESULTS / "omnibal_rank_load.png")
    print(f"simulated speed-up {cand['samples_per_second'] / base['samples_per_second']:.2f}x "
          f"({cand['samples_per_second']:.2f} vs {base['samples_per_second']:.2f} samples/s); "
          f"ISF dist vit/llm {isf_report['dist_vit']:.4f}/{isf_report['dist_llm']:.4f}, pad {isf_report['pad']:.3f}, "
          f"max/mean {isf_report['max_mean']:.4f}; random dist {rnd_report['dist_vit']:.3f}/{rnd_report['dist_llm']:.3f} "
          f"pad {rnd_report['pad']:.3f} max/mean {rnd_report['max_mean']:.3f}")
    for k, v in candidate["ablations"].items():
        print(f"  {k}: {v['speedup']:.2f}x")
    print(f"partition {search.method} over {search.evaluated} candidates in {search.seconds:.2f} s: {searched} "
          f"(parameters: {params}) -> {path}")


if __name__ == "__main__":
    main()
