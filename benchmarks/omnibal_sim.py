"""OmniBal at InternVL scale, simulated: ISF + searched stages + per-stage recompute vs random batches + `parameters`.

InternVL-Chat-1.5-like model (InternViT-6B + InternLM2-20B, FLOP-count cost profile on A100-80GB at 45% MFU,
ZeRO-1 over the data-parallel ranks), 8 data-parallel x 4 pipeline stages, 16 micro-batches per step, on
InternVL-like lengths synthesised from the spec's statistics. Each step's time is its slowest rank's
simulated 1F1B makespan; throughput is samples per simulated second over an epoch.

- baseline: seeded random batches of 4 samples padded to the longest, DeepSpeed's `parameters` split,
  global full recompute (InternVL's setting, which a `parameters` split needs to fit);
- candidate: rayflow-ISF (ISF groups, budgets from rayflow's grid Q search, then dealt longest-first so each
  step holds groups of similar cost), searched partition, per-stage recompute plan.

`candidate.isf_variants` sets ISF as the paper describes it beside rayflow's, each with its own searched
partition and recompute plan: `rayflow_isf` (the candidate), `paper_isf` (the same groups dealt to ranks at
random, as the reference's sampler does), and `paper_isf_linear_q` (the reference's one-dimensional Q search
too). Balance metrics use the reference's definitions (`pad`, `dist_vit`, `dist_llm`) beside rayflow's
per-step ones (`dist_*_step`, `max_mean`); each result's `definitions` says which is which.

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
from rayflow.train.omnibal.qsearch import search_q, search_q_linear  # noqa: E402
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
    t0 = time.perf_counter()
    q_linear = search_q_linear(vit, tok, ranks=DP, samples_per_group=4)
    q_linear_seconds = time.perf_counter() - t0

    def schedule(balance: BalanceConfig):
        return build_schedule(vit, tok, balance, ranks=DP, micro_per_step=MICRO, epoch=0, cost=cost)

    isf = schedule(BalanceConfig(isf=q.isf))
    paper = schedule(BalanceConfig(isf=q.isf, dealing="random"))
    paper_linear = schedule(BalanceConfig(isf=q_linear.isf, dealing="random"))
    rnd = schedule(BalanceConfig(balance="random", batch_size=4))
    isf_report, rnd_report = isf.report(tok, cost), rnd.report(tok, cost)

    def partition_for(sched):
        workloads = [sched.work.take(sched.assignment[t, r]) for t in range(2) for r in range(2)]
        return search_partition(profile, PP, workloads, MemorySpec(BUDGET, bound(sched)))

    search = partition_for(isf)
    searched, params = search.best.parts, parameters_partition(profile, PP)

    def run(sched, parts, recompute):
        return simulate_schedule(profile, parts, sched, MemorySpec(BUDGET, bound(sched)), recompute)

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

    def variant(label: str, sched, isf_cfg, q_method: str, dealing: str) -> dict:
        parts = partition_for(sched).best.parts
        sim = run(sched, parts, "plan")
        return {
            "label": label,
            "q_search": q_method,
            "dealing": dealing,
            "isf": isf_cfg.model_dump(),
            "parts": list(parts),
            "samples_per_second": sim["samples_per_second"],
            "speedup": sim["samples_per_second"] / base["samples_per_second"],
            **{k: v for k, v in sched.report(tok, cost).items() if k != "definitions"},
        }

    variants = {
        "rayflow_isf": variant(
            "rayflow-ISF: ISF + longest-first dealing of groups to ranks", isf, q.isf, "grid (rayflow)", "lpt"
        ),
        "paper_isf": variant(
            "paper-ISF: ISF, groups dealt to ranks at random (as the reference's sampler)",
            paper,
            q.isf,
            "grid (rayflow)",
            "random",
        ),
        "paper_isf_linear_q": variant(
            "paper-ISF with the reference's 1-D Q search", paper_linear, q_linear.isf, "linear (reference)", "random"
        ),
    }
    candidate = {"label": "rayflow-ISF (ISF + longest-first dealing) + searched partition + per-stage recompute",
                 "value": cand["samples_per_second"], "parts": list(searched), "isf": q.isf.model_dump(),
                 **isf_report, **summary(cand), "q_search_seconds": q_seconds,
                 "q_search_linear_seconds": q_linear_seconds,
                 "partition_search": {"method": search.method, "evaluated": search.evaluated,
                                      "seconds": search.seconds}}  # fmt: skip
    baseline = {"label": "random batches (4) + parameters partition + full recompute",
                "value": base["samples_per_second"], "parts": list(params), **rnd_report, **summary(base)}  # fmt: skip
    candidate["ablations"] = {k: {"samples_per_second": v["samples_per_second"],
                                  "speedup": v["samples_per_second"] / base["samples_per_second"],
                                  "fits_memory": v["fits_memory"]} for k, v in ablations.items()}  # fmt: skip
    candidate["isf_variants"] = variants
    path = write_result("omnibal_sim", candidate, baseline, unit="samples per simulated second",
                        higher_is_better=True)  # fmt: skip
    plot(base, cand, RESULTS / "omnibal_rank_load.png")
    print(f"simulated speed-up {cand['samples_per_second'] / base['samples_per_second']:.2f}x "
          f"({cand['samples_per_second']:.2f} vs {base['samples_per_second']:.2f} samples/s); random batches: "
          f"pad {rnd_report['pad']:.3f}, dist vit/llm {rnd_report['dist_vit']:.4f}/{rnd_report['dist_llm']:.4f} "
          f"(per step {rnd_report['dist_vit_step']:.4f}/{rnd_report['dist_llm_step']:.4f}), "
          f"max/mean {rnd_report['max_mean']:.3f}")  # fmt: skip
    for v in variants.values():
        print(f"  {v['label']}: Q_v={v['isf']['q_v']} Q_t={v['isf']['q_t']}, {v['speedup']:.2f}x, "
              f"dist vit/llm {v['dist_vit']:.4f}/{v['dist_llm']:.4f} "
              f"(per step {v['dist_vit_step']:.4f}/{v['dist_llm_step']:.4f}), max/mean {v['max_mean']:.4f}")  # fmt: skip
    for k, v in candidate["ablations"].items():
        print(f"  {k}: {v['speedup']:.2f}x")
    print(f"partition {search.method} over {search.evaluated} candidates in {search.seconds:.2f} s: {searched} "
          f"(parameters: {params}); Q search {q_seconds:.1f} s (grid), {q_linear_seconds:.1f} s (linear) -> {path}")  # fmt: skip


if __name__ == "__main__":
    main()
