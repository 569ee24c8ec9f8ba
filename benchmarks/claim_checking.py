"""Claim checking: joint (5 claims per prompt, candidate) vs one claim per prompt (baseline), and eval_rag scaling.

1. Claims checked per second by the LLM checker, joint vs single, on the same engine (hf, the tiny model) and the
   same claims: the shipped labelled sample's claims x references (answer, response, every chunk), replicated
   `--copies` times with distinct references, all four label fields. Each side runs once to warm up, then is
   timed; the labels' agreement between the two modes on this model is recorded (a random tiny model's answers
   differ between the prompts; a capable model's mostly agree).
2. eval_rag items/s with 2 actors vs 1 (Ray Data, one local Ray with 2 CPUs, one CPU per actor): the shipped
   inputs without labels, extraction and checking, `--items` items, label cache off; the rate is items over
   the job's evaluate phase (actor start-up included).

Top-level ratio = joint / single claims/s. Run: `python benchmarks/claim_checking.py [--copies 12 --items 96]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.eval.ragchecker import LABEL_FIELDS, select_metrics
from rayflow.eval.ragchecker.checking import CheckingConfig, LLMChecker, RAGEvaluator
from rayflow.eval.safety.llm import from_engine
from rayflow.llm import EngineConfig, build_engine

REPO = Path(__file__).resolve().parents[1]
ENGINE = EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024, batch_size=32)


def sample(copies: int) -> list[dict]:
    """The labelled sample without labels, `copies` times, each copy's texts made distinct."""
    items = json.loads((REPO / "examples/ragchecker/labelled.json").read_text())["results"]
    out = []
    for c in range(copies):
        for item in items:
            item = {k: v for k, v in item.items() if k not in LABEL_FIELDS}
            tag = f" (copy {c})"
            out.append({**item, "gt_answer": item["gt_answer"] + tag, "response": item["response"] + tag,
                        "retrieved_context": [{**d, "text": d["text"] + tag} for d in item["retrieved_context"]]})  # fmt: skip
    return out


def check_side(engine, items: list[dict], joint: bool) -> tuple[float, list[dict], int]:
    """(claims/s, labelled items, labels) of one mode: a warm-up pass, then a timed one."""
    cfg = CheckingConfig(joint_check=joint, checker_max_new_tokens=8, batch_size_checker=64)
    evaluator = RAGEvaluator(None, LLMChecker(from_engine(engine), ENGINE.model, cfg), cfg)
    metrics = select_metrics("all_metrics")
    asyncio.run(evaluator.evaluate(items[: len(items) // 4], metrics))
    start = time.perf_counter()
    done = asyncio.run(evaluator.evaluate(items, metrics))
    seconds = time.perf_counter() - start
    labels = sum(len(flat(d[f])) for d in done for f in LABEL_FIELDS)
    return labels / seconds, done, labels


def flat(labels: list) -> list[str]:
    return [x for row in labels for x in (row if isinstance(row, list) else [row])]


def scaling(n_items: int) -> dict:
    """eval_rag items/s with 1 and 2 actors on one local Ray with 2 CPUs."""
    import ray

    from rayflow.config import load_config
    from rayflow.eval.ragchecker.workflow import EvalRagConfig, run

    base = [json.loads(line) for line in (REPO / "examples/ragchecker/inputs.jsonl").read_text().splitlines()]
    base = [b for b in base if "gt_answer" in b]
    rates = {}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "items.jsonl"
            with data.open("w") as f:
                for i in range(n_items):
                    item = dict(base[i % len(base)])
                    item["query_id"], item["response"] = f"x{i}", f"{item['response']} ({i})"
                    f.write(json.dumps(item) + "\n")
            for actors in (1, 2):
                out = Path(tmp) / f"out{actors}"
                overrides = [f"input_path={data}", f"output_dir={out}", "cache=false", f"stage.actors={actors}",
                             "stage.cpus_per_actor=1", "stage.batch_size=8"]  # fmt: skip
                result = run(load_config(EvalRagConfig, REPO / "configs/eval_rag.yaml", overrides))
                seconds = json.loads((out / "run.json").read_text())["phases"]["evaluate"]
                rates[actors] = {"items": result.summary["evaluated"], "seconds": round(seconds, 2),
                                 "items_per_s": result.summary["evaluated"] / seconds}  # fmt: skip
    finally:
        ray.shutdown()
    return {
        "actors_1": rates[1],
        "actors_2": rates[2],
        "ratio": rates[2]["items_per_s"] / rates[1]["items_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=12, help="copies of the labelled sample to check")
    parser.add_argument("--items", type=int, default=96, help="items per eval_rag side")
    args = parser.parse_args()
    items = sample(args.copies)
    engine = build_engine(ENGINE)
    try:
        single_rate, single, n = check_side(engine, items, joint=False)
        joint_rate, joint, _ = check_side(engine, items, joint=True)
    finally:
        engine.close()
    pairs = [
        (a, b) for x, y in zip(joint, single) for f in LABEL_FIELDS for a, b in zip(flat(x[f]), flat(y[f]))
    ]
    agreement = sum(a == b for a, b in pairs) / len(pairs)
    neutral = sum(a == b == "Neutral" for a, b in pairs) / len(pairs)
    scale = scaling(args.items)
    candidate = {"label": "joint (5 claims per prompt)", "value": joint_rate, "labels": n}
    baseline = {"label": "one claim per prompt", "value": single_rate, "labels": n}
    path = write_result("claim_checking", candidate, baseline, unit="claims/s", higher_is_better=True)
    result = json.loads(path.read_text())
    result["label_agreement"] = agreement
    result["both_neutral"] = neutral
    result["eval_rag_scaling"] = scale
    result["note"] = (
        f"joint {joint_rate:.0f} vs single {single_rate:.0f} claims/s ({joint_rate / single_rate:.2f}x) on "
        f"{ENGINE.backend}/{ENGINE.model}, {n} labels; joint and single labels agree on {agreement:.1%} "
        f"({neutral:.1%} Neutral in both: the random tiny model rarely writes a label word, and an unreadable "
        "answer counts Neutral, so agreement says little about a real checker). eval_rag with 2 actors vs 1: "
        f"{scale['actors_2']['items_per_s']:.2f} vs {scale['actors_1']['items_per_s']:.2f} items/s "
        f"({scale['ratio']:.2f}x)."
    )
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(result["note"], "->", path)


if __name__ == "__main__":
    main()
