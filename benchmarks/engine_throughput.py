"""Generation throughput, steady state: vLLM engine (candidate) vs transformers engine (baseline).

Both run the same tiny model on the same prompts with greedy decoding; engine start-up and one warm-up
batch are excluded. Run: `python benchmarks/engine_throughput.py [--prompts 64] [--max-tokens 32]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine


def measure(engine, prompts, params, repeats: int) -> dict:
    engine.generate(prompts[:8], params)  # warm-up: first-call allocations, kernel selection
    tokens, seconds = 0, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        gens = engine.generate(prompts, params)
        seconds += time.perf_counter() - start
        refused = [g.reason for g in gens if isinstance(g, PromptRejected)]
        if refused:  # a refused prompt costs no time: the figure would be wrong
            raise RuntimeError(f"the engine refused {len(refused)} prompts, e.g. {refused[0]}")
        tokens += sum(len(g.token_ids) for g in gens)
    return {"value": tokens / seconds, "tokens": tokens, "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny:tiny")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prompts = [[{"role": "user", "content": f"Write a line about topic number {i}."}] for i in range(args.prompts)]
    params = SamplingParams(max_tokens=args.max_tokens)
    common = {"model": args.model, "dtype": "float32", "max_model_len": 512}

    hf = build_engine(EngineConfig(backend="hf", batch_size=args.prompts, **common))
    baseline = {"label": "hf", **measure(hf, prompts, params, args.repeats)}
    hf.close()
    vllm = build_engine(EngineConfig(backend="vllm", **common))
    candidate = {"label": "vllm", **measure(vllm, prompts, params, args.repeats)}
    vllm.close()

    path = write_result(
        "engine_throughput", candidate, baseline, unit="generated tokens/s", higher_is_better=True
    )
    print(f"vllm {candidate['value']:.0f} tok/s vs hf {baseline['value']:.0f} tok/s -> {path}")


if __name__ == "__main__":
    main()
