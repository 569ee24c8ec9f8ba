"""Build rayflow's tiny ProX refiner (`tiny:refiner`) and measure it against its teacher, in one command.

    python benchmarks/prox_refiner.py [--install]      # about 4 minutes on 2 CPUs (the aim: at most 10)

Annotation (configs/prox_annotate.yaml: the rules teacher on generated web-like pages; held out: pages from
unseen templates and texts, plus examples/web_corpus.jsonl) -> SFT (configs/train_prox_refiner.yaml, one model
for both levels, Ray Train + DeepSpeed) -> evaluation on the held-out split (configs/eval_prox_refiner.yaml).
The annotation's prompt settings are checked equal to configs/prox_refine_lm.yaml's, so the refiner reads what
the job sends. `--install` copies the model into rayflow/llm/tiny_refiner/ (what `tiny:refiner` names).

Writes benchmarks/results/prox_refiner.json: top-level `doc_f1`, `chunk_line_f1`, `normalize_match`,
`parse_fail_rate` (agreement with the teacher; the teacher scores 1.0 against itself, the baseline of `ratio`),
the per-source figures, and the wall time of each phase. Deterministic: seeds fix the pages, the sample order and
the initial weights; one worker on CPU gives the same weights on the same machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.config import load_config
from rayflow.data.prox import annotate, refiner_eval
from rayflow.data.prox.pipeline import ProxRefineConfig
from rayflow.llm import REFINER_DIR
from rayflow.train import prox_refiner

REPO = Path(__file__).resolve().parents[1]
PROMPT_KEYS = (
    "preset",
    "doc_max_prompt_tokens",
    "doc_max_tokens",
    "chunk_tokens",
    "chunk_max_tokens",
    "long_line",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work", default=str(REPO / "outputs" / "prox_refiner_build"), help="build directory"
    )
    parser.add_argument("--install", action="store_true", help="copy the model to rayflow/llm/tiny_refiner/")
    parser.add_argument(
        "--annotate", nargs="*", default=[], help="key=value overrides of the annotation config"
    )
    parser.add_argument("--train", nargs="*", default=[], help="key=value overrides of the training config")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)

    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never attach to another cluster
    phases = {}
    configs = REPO / "configs"
    job = load_config(ProxRefineConfig, configs / "prox_refine_lm.yaml")
    ann_cfg = load_config(
        annotate.AnnotateConfig,
        configs / "prox_annotate.yaml",
        [f"output_dir={work / 'annotate'}", *args.annotate],
    )
    for key in PROMPT_KEYS:
        if getattr(ann_cfg.lm, key) != getattr(job.lm, key):
            raise SystemExit(
                f"configs/prox_annotate.yaml lm.{key} differs from configs/prox_refine_lm.yaml's"
            )
    if ann_cfg.lm.doc_engine.max_model_len != job.lm.doc_engine.max_model_len:
        raise SystemExit(
            "configs/prox_annotate.yaml's context (max_model_len) differs from prox_refine_lm.yaml's"
        )

    t = time.perf_counter()
    ann = annotate.run(ann_cfg)
    phases["annotate_s"] = round(time.perf_counter() - t, 1)
    print(ann.message, flush=True)

    t = time.perf_counter()
    train_cfg = load_config(
        prox_refiner.RefinerTrainConfig,
        configs / "train_prox_refiner.yaml",
        [f"data={work / 'annotate'}", f"output_dir={work / 'train'}", *args.train],
    )
    trained = prox_refiner.run(train_cfg)
    phases["train_s"] = round(time.perf_counter() - t, 1)
    print(trained.message, flush=True)
    model_dir = work / "train" / "model"
    if args.install:
        shutil.rmtree(REFINER_DIR, ignore_errors=True)
        shutil.copytree(model_dir, REFINER_DIR)
        model_dir = REFINER_DIR

    t = time.perf_counter()
    eval_cfg = load_config(
        refiner_eval.RefinerEvalConfig,
        configs / "eval_prox_refiner.yaml",
        [f"data={work / 'annotate'}", f"output_dir={work / 'eval'}", f"engine.model={model_dir}"],
    )
    evaluated = refiner_eval.run(eval_cfg)
    phases["eval_s"] = round(time.perf_counter() - t, 1)
    print(evaluated.message, flush=True)
    phases["build_s"] = round(phases["annotate_s"] + phases["train_s"], 1)
    phases["total_s"] = round(time.perf_counter() - started, 1)

    s = evaluated.summary
    figures = {k: s[k] for k in ("doc_f1", "chunk_line_f1", "normalize_match", "parse_fail_rate")}
    path = write_result(
        "prox_refiner",
        {"label": "tiny:refiner doc F1 vs the rules teacher", "value": s["doc_f1"], **figures},
        {"label": "the teacher against itself", "value": 1.0},
        unit="doc-level F1 (drop positive) against the teacher",
        higher_is_better=True,
    )
    result = json.loads(path.read_text())
    final_loss = trained.summary["models"]["model"]["final_metrics"].get("loss")
    result = {
        **figures,
        **result,
        "aims": {"doc_f1": 0.8, "chunk_line_f1": 0.6},
        "detail": {
            k: s[k]
            for k in (
                "doc",
                "chunk_lines",
                "normalize",
                "parse_fail_by_level",
                "documents",
                "programs",
                "truncated",
                "by_source",
            )
        },
        "annotation": {
            k: ann.summary[k] for k in ("documents", "examples", "by_level", "rejected", "prompt_preset")
        },
        "training": {"final_loss": final_loss, "train": train_cfg.train.model_dump(mode="json")},
        "wall": phases,
        "command": " ".join(["python benchmarks/prox_refiner.py", *sys.argv[1:]]),
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({**figures, **phases}))


if __name__ == "__main__":
    main()
