"""Judge service throughput with request batching (candidate) vs one request per engine call (baseline).

Same Serve app, same vLLM engine (tiny model); batching is switched live on both deployments:

* baseline, one request per forward: the judge deployment judges each HTTP request alone and the LLM
  deployment runs each prompt as its own engine call (max_batch_size=1 on both);
* before: the LLM deployment's `@serve.batch` only (max 64 prompts), each HTTP request judged alone and
  sending its prompt in its own handle call (the path before issue 17);
* candidate: the judge deployment also batches concurrent HTTP requests (max 64, `--judge-wait-s`) into one
  `judge` call whose prompts reach the LLM deployment in one handle call.

A bounded load generator on loopback keeps a fixed number of requests in flight (concurrency 1, 4, 16,
64) against `POST /v1/judge/safety` (safetyj, label mode) and records throughput, p50/p99 latency, the
LLM deployment's engine batches (count, mean size, seconds in engine calls) and the CPU time per request of
each process on the path (HTTP proxy, judge replica, LLM replica, vLLM's engine-core and worker processes,
client, the rest) at each level. The JSON's ratio
is candidate / baseline throughput at concurrency 16.

Run: `python benchmarks/judge_batching.py [--requests-per-level 4] [--min-requests 32]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import write_result

LEVELS = (1, 4, 16, 64)


async def load(url: str, concurrency: int, n: int) -> dict:
    """Send n requests keeping `concurrency` in flight; returns req/s and latency percentiles (ms)."""
    import httpx

    latencies: list[float] = []
    queue = list(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            body = {"id": i, "query": f"How do I look after plant number {i}?", "response": "Water it weekly.",
                    "scheme": "safetyj", "mode": "label"}  # fmt: skip
            start = time.perf_counter()
            reply = await client.post(f"{url}/v1/judge/safety", json=body)
            reply.raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latencies.sort()
    return {"requests": n, "seconds": round(seconds, 3), "req_per_s": round(n / seconds, 2),
            "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)}  # fmt: skip


ROLES = {"ProxyActor": "proxy", "SafetyJudgeServer": "judge", "LLMServer": "llm", "VLLM::": "engine"}


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far of every process on the machine, by role in the request path: Serve's HTTP proxy,
    the judge replica, the LLM replica, vLLM's engine core, this load generator, and the rest (Ray itself)."""
    import psutil

    out: dict[str, float] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        role = (
            "client" if proc.pid == os.getpid() else next((r for k, r in ROLES.items() if k in cmd), "other")
        )
        out[role] = out.get(role, 0.0) + times.user + times.system
    return out


def sweep(url: str, judge, llm, judge_batch: int, llm_batch: int, judge_wait_s: float, args) -> dict:
    judge.set_batching.remote(judge_batch, judge_wait_s if judge_batch > 1 else 0.0).result()
    llm.set_batching.remote(llm_batch, 0.01 if llm_batch > 1 else 0.0).result()
    asyncio.run(load(url, 4, 8))  # warm-up
    levels = {}
    for c in LEVELS:
        llm.reset_stats.remote().result()
        n = max(args.min_requests, args.requests_per_level * c)
        cpu_before = cpu_by_role()
        result = asyncio.run(load(url, c, n))
        cpu_after = cpu_by_role()
        stats = llm.stats.remote().result()
        result["cpu_ms_per_request"] = {
            role: round(1000 * (cpu_after[role] - cpu_before.get(role, 0.0)) / n, 1)
            for role in sorted(cpu_after)
        }
        result.update(engine_batches=stats["batches"], mean_batch=round(stats["requests"] / max(stats["batches"], 1), 2),
                      engine_s=stats["engine_s"])  # fmt: skip
        levels[str(c)] = result
        print(f"  judge batch {judge_batch:<3} llm batch {llm_batch:<3} concurrency={c:<3} {result}")
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny:tiny")
    parser.add_argument("--requests-per-level", type=int, default=4, help="requests = this x concurrency")
    parser.add_argument("--min-requests", type=int, default=32)
    parser.add_argument(
        "--judge-wait-s", type=float, default=0.05, help="judge deployment's batch_wait_timeout_s"
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from serve.judge import JudgeAppArgs, build_judge_app
    from tests.conftest import free_port

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    app_args = JudgeAppArgs(
        llm={"engine": {"backend": "vllm", "model": args.model, "dtype": "float32", "max_model_len": 1024},
             "served_model_name": "tiny", "max_batch_size": 64},
        llm_replica={"num_cpus": 1.0}, judge_replica={"num_cpus": 0.1},
    )  # fmt: skip
    serve.run(build_judge_app(app_args), name="judge", route_prefix="/")
    judge = serve.get_deployment_handle("SafetyJudgeServer", app_name="judge")
    llm = serve.get_deployment_handle("LLMServer", app_name="judge")
    url = f"http://127.0.0.1:{port}"
    try:
        batched = sweep(url, judge, llm, 64, 64, args.judge_wait_s, args)
        before = sweep(url, judge, llm, 1, 64, args.judge_wait_s, args)
        single = sweep(url, judge, llm, 1, 1, args.judge_wait_s, args)
    finally:
        serve.shutdown()
        ray.shutdown()
    candidate = {"label": f"requests batched at the judge (max 64, wait {args.judge_wait_s:g} s) and the LLM "
                 "deployment (max 64)", "value": batched["16"]["req_per_s"], "levels": batched,
                 "before": {"label": "LLM deployment @serve.batch only (max 64), one handle call per request",
                            "value": before["16"]["req_per_s"], "levels": before}}  # fmt: skip
    baseline = {"label": "one request per forward", "value": single["16"]["req_per_s"], "levels": single}
    path = write_result("judge_batching", candidate, baseline, unit="judge requests/s at concurrency 16",
                        higher_is_better=True)  # fmt: skip
    runs = {"batched": batched, "before": before, "single": single}
    print(
        f"\n{'concurrency':>11} | "
        + " | ".join(f"{name + ' req/s':>13} {'p50':>7} {'p99':>7}" for name in runs)
    )
    for c in LEVELS:
        print(f"{c:>11} | " + " | ".join(f"{r[str(c)]['req_per_s']:>13} {r[str(c)]['p50_ms']:>7} "
                                           f"{r[str(c)]['p99_ms']:>7}" for r in runs.values()))  # fmt: skip
    print(f"ratio at concurrency 16: {candidate['value'] / baseline['value']:.2f}x -> {path}")


if __name__ == "__main__":
    main()
