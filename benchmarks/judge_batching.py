"""Judge service throughput with `@serve.batch` (candidate) vs one request per engine call (baseline).

Same Serve app, same vLLM engine (tiny model): the LLM deployment's batching is switched live between
max_batch_size=64 and 1. A bounded load generator on loopback keeps a fixed number of requests in flight
(concurrency 1, 4, 16, 64) against `POST /v1/judge/safety` (safetyj, label mode) and records throughput and
p50/p99 latency at each level. The JSON's ratio is the throughput ratio at concurrency 16.

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


def sweep(url: str, llm, max_batch_size: int, args) -> dict:
    llm.set_batching.remote(max_batch_size, 0.01 if max_batch_size > 1 else 0.0).result()
    asyncio.run(load(url, 4, 8))  # warm-up
    levels = {}
    for c in LEVELS:
        llm.reset_stats.remote().result()
        result = asyncio.run(load(url, c, max(args.min_requests, args.requests_per_level * c)))
        result["engine_batches"] = llm.stats.remote().result()["batches"]
        levels[str(c)] = result
        print(f"  max_batch_size={max_batch_size:<3} concurrency={c:<3} {result}")
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny:tiny")
    parser.add_argument("--requests-per-level", type=int, default=4, help="requests = this x concurrency")
    parser.add_argument("--min-requests", type=int, default=32)
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
    llm = serve.get_deployment_handle("LLMServer", app_name="judge")
    url = f"http://127.0.0.1:{port}"
    try:
        batched = sweep(url, llm, 64, args)
        single = sweep(url, llm, 1, args)
    finally:
        serve.shutdown()
        ray.shutdown()
    candidate = {"label": "@serve.batch (max 64)", "value": batched["16"]["req_per_s"], "levels": batched}
    baseline = {"label": "one request per forward", "value": single["16"]["req_per_s"], "levels": single}
    path = write_result("judge_batching", candidate, baseline, unit="judge requests/s at concurrency 16",
                        higher_is_better=True)  # fmt: skip
    print(
        f"\n{'concurrency':>11} | {'batched req/s':>13} {'p50':>7} {'p99':>7} | {'single req/s':>12} {'p50':>7} {'p99':>7}"
    )
    for c in LEVELS:
        b, s = batched[str(c)], single[str(c)]
        print(f"{c:>11} | {b['req_per_s']:>13} {b['p50_ms']:>7} {b['p99_ms']:>7} | "
              f"{s['req_per_s']:>12} {s['p50_ms']:>7} {s['p99_ms']:>7}")  # fmt: skip
    print(f"ratio at concurrency 16: {candidate['value'] / baseline['value']:.2f}x -> {path}")


if __name__ == "__main__":
    main()
