"""Does refining help, in miniature: pre-train on raw pages vs on their refined version, same token budget.

    python benchmarks/prox_refining_helps.py [--pages 1000] [--steps 150] [--generator lm]    # ~2 min on 2 CPUs

The raw corpus is generated web-like pages (`rayflow.data.prox.web_pages`, training templates): articles in
site furniture plus low-quality pages. The ProX job refines it (`--generator lm`: the shipped `tiny:refiner`,
configs/prox_refine_lm.yaml on the transformers backend; `rules`: the rules generator). Two tiny models start
from the same initial weights and are pre-trained through `rayflow.train.loop.fit` for the same number of steps
on windows of the same length, one on each corpus (so the same number of tokens), and scored by perplexity on
held-out clean text: the tiny corpus's held-out paragraphs, which neither corpus contains. This is the paper's
claim (refined data trains better models at equal tokens) at toy scale; not part of CI.

Writes benchmarks/results/prox_refining_helps.json: candidate = the refined-data model's perplexity, baseline =
the raw-data model's (ratio < 1: refining helped).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.config import load_config
from rayflow.data.prox import pipeline
from rayflow.data.prox.web_pages import make_pages, paragraphs
from rayflow.llm import EngineConfig, load_tokenizer, resolve_model_path
from rayflow.train.loop import TrainLoopConfig, fit
from rayflow.train.sft import SFTTask

REPO = Path(__file__).resolve().parents[1]
WINDOW = 128


def windows(texts: list[str], tokenizer) -> list[dict]:
    """Non-overlapping WINDOW-token windows of the documents joined by EOS, as SFT rows with empty prompts."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [
        {"prompt_ids": [], "response_ids": ids[i : i + WINDOW]} for i in range(0, len(ids) - WINDOW, WINDOW)
    ]


def perplexity(model_dir: Path, texts: list[str], tokenizer) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    nll = n = 0.0
    with torch.no_grad():
        for row in windows(texts, tokenizer):
            x = torch.tensor([row["response_ids"]])
            nll += model(input_ids=x, labels=x).loss.item() * (x.shape[1] - 1)
            n += x.shape[1] - 1
    return math.exp(nll / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000, help="generated raw pages")
    parser.add_argument("--steps", type=int, default=150, help="pre-training steps per model")
    parser.add_argument("--generator", choices=["lm", "rules"], default="lm")
    parser.add_argument("--work", default=str(REPO / "outputs" / "prox_refining_helps"))
    args = parser.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never attach to another cluster
    pages = list(make_pages(args.pages, "train", seed=1))
    raw_path = work / "raw.jsonl"
    raw_path.write_text("".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in pages))
    overrides = [f"input={raw_path}", f"output_dir={work / 'refined'}", f"generator={args.generator}"]
    if args.generator == "lm":
        overrides += ["lm.doc_engine.backend=hf", "lm.chunk_engine.backend=hf"]
    refine = load_config(pipeline.ProxRefineConfig, REPO / "configs" / "prox_refine_lm.yaml", overrides)
    refined_rows = pipeline.run(refine).summary
    import pyarrow.parquet as pq

    refined = [r["text"] for r in pq.read_table(work / "refined" / "data").to_pylist() if r["kept"]]

    base = resolve_model_path("tiny:tiny")
    tokenizer = load_tokenizer(EngineConfig(model=base))
    clean = paragraphs()["heldout"]
    cfg = TrainLoopConfig(
        num_workers=1, cpus_per_worker=2, zero_stage=0, micro_batch_size=8, max_steps=args.steps, lr=3e-3,
        warmup_ratio=0.1, lr_schedule="cosine", eval_every=0, checkpoint_every=0, log_every=50,
    )  # fmt: skip
    sides = {}
    for name, texts in (("raw", [p["text"] for p in pages]), ("refined", refined)):
        rows = windows(texts, tokenizer)
        task = SFTTask(base, tokenizer.pad_token_id, rows, rows[:8], seed=0)
        fit(task, cfg, storage_path=work / "ray", name=name, export_dir=work / name)
        sides[name] = {
            "label": f"tiny model pre-trained on the {name} pages",
            "value": round(perplexity(work / name, clean, tokenizer), 3),
            "documents": len(texts),
            "windows_available": len(rows),
            "tokens_trained": args.steps * cfg.micro_batch_size * WINDOW,
        }
        print(name, sides[name], flush=True)
    path = write_result(
        "prox_refining_helps", sides["refined"], sides["raw"], unit="perplexity on held-out clean text",
        higher_is_better=False,
    )  # fmt: skip
    result = json.loads(path.read_text())
    result["setup"] = {
        "pages": args.pages, "steps": args.steps, "window": WINDOW, "generator": args.generator,
        "word_retention": refined_rows["word_retention"], "documents_kept": refined_rows["documents_kept"],
        "command": " ".join(["python benchmarks/prox_refining_helps.py", *sys.argv[1:]]),
    }  # fmt: skip
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
