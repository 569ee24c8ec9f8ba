"""ProX orchestration overhead: the whole job with generator=lm on the tiny model through vLLM (candidate) vs the
bare vLLM engine generating the same prompts in one process (baseline).

Candidate: the workflow's `run` on a local Ray (2 CPUs), one fused stage actor holding one vLLM engine; rate =
documents/s at steady state from the commit times of the output parts (Ray and engine start-up excluded).
Baseline: the same `LMGenerator` (same prompts, chunking, sampling) in this process, engine built and warmed
up first, then all doc prompts and all chunk prompts in one call each. Both read the same documents (the sample
corpus x `--copies`). Run: `python benchmarks/prox_engine_overhead.py [--copies 80]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "web_corpus.jsonl"


def lm_config():
    from rayflow.data.prox.lm import LMConfig
    from rayflow.llm import EngineConfig

    engine = EngineConfig(backend="vllm", model="tiny:tiny", dtype="float32", max_model_len=512)
    return LMConfig(
        doc_engine=engine,
        chunk_engine=engine,
        doc_max_tokens=16,
        chunk_tokens=200,
        chunk_max_tokens=48,
        long_line="truncate",
    )


def job_rate(corpus: Path, out: Path, batch_size: int) -> dict:
    import ray

    from rayflow.data.engine_stage import StageConfig
    from rayflow.data.prox.output import Output, steady_rate
    from rayflow.data.prox.pipeline import ProxRefineConfig, run

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = ProxRefineConfig(
            input=str(corpus),
            output_dir=str(out),
            generator="lm",
            lm=lm_config(),
            fuse_stages=True,
            stage=StageConfig(batch_size=batch_size, cpus_per_actor=1.0),
            rows_per_block=batch_size,
            block_bytes=1 << 19,  # ~100-row parts: enough commits after the first to time a steady state
        )
        stats = run(cfg).summary
    finally:
        ray.shutdown()
    return {**steady_rate(Output(str(out))), "documents": stats["documents_in"], "errors": stats["errors"]}


def bare_rate(texts: list[str]) -> dict:
    from rayflow.data.prox.lm import LMGenerator
    from rayflow.llm import build_engine

    config = lm_config()
    generator, engine = LMGenerator(config), build_engine(config.doc_engine)
    generator.doc_programs(texts[:8], engine)  # engine start and warm-up, excluded
    generator.chunk_programs(texts[:8], engine)
    start = time.perf_counter()
    generator.doc_programs(texts, engine)
    generator.chunk_programs(texts, engine)
    seconds = time.perf_counter() - start
    engine.close()
    return {"value": len(texts) / seconds, "documents": len(texts), "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    # Ray caps a 1-CPU actor at OMP_NUM_THREADS=1 unless it is set; both sides get the same engine threads, so
    # the ratio measures orchestration, not a thread count. Ray's workers inherit this process's environment.
    threads = os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    docs = [{**r, "id": f"{r['id']}-{c}"} for c in range(args.copies) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
        candidate = {
            "label": "prox_refine job (Ray Data + vLLM actor)",
            **job_rate(corpus, Path(tmp) / "out", args.batch_size),
        }
    baseline = {"label": "bare vLLM engine, one process", **bare_rate([d["text"] for d in docs])}
    candidate["omp_num_threads"] = baseline["omp_num_threads"] = int(threads)
    path = write_result(
        "prox_engine_overhead", candidate, baseline, unit="documents/s", higher_is_better=True
    )
    print(
        f"job {candidate['value']:.1f} docs/s vs bare engine {baseline['value']:.1f} docs/s "
        f"({candidate['value'] / baseline['value']:.2f}x) -> {path}"
    )


if __name__ == "__main__":
    main()
