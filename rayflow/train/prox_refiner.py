"""Fine-tune a ProX refiner: SFT of a causal LM on the annotation's (prompt, program) pairs.

The data is `rayflow.data.prox.annotate`'s output: prompts already rendered as token ids by the ProX job's own
prompt functions, programs in canonical form. Each example becomes prompt ids -> program ids + EOS, trained with
rayflow's SFT task (response-token NLL) on the shared Ray Train + DeepSpeed loop (`rayflow.train.loop.fit`).
Doc- and chunk-level examples train one model (`levels: joint`, the model then serves both `lm.doc_engine` and
`lm.chunk_engine`) or one model each (`separate`: model_doc/ and model_chunk/).

Before training, the prompts of a sample of doc examples are rendered again with this model's tokenizer and the
annotation's `lm` settings; any difference (another tokenizer, chat template or prompt cut) is an error, since
the refiner would then be trained on prompts the job never sends. Every exported model directory holds
`refiner.json`: the prompt preset, the `lm` prompt settings and context it was trained for, the teacher and the
data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
from pydantic import Field

from rayflow.config import Config
from rayflow.data.prox.lm import LMConfig, LMGenerator
from rayflow.llm import EngineConfig, load_tokenizer, resolve_model_path
from rayflow.runinfo import write_json
from rayflow.train.loop import TrainLoopConfig, fit
from rayflow.train.preference_data import response_ids
from rayflow.train.sft import SFTTask, training_summary
from rayflow.workflow import InputError, Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)

REFINER_FILE = "refiner.json"
_PROMPT_CHECKS = 16


class RefinerTrainConfig(Config):
    """ProX refiner SFT job."""

    data: str = Field(
        "outputs/prox_annotate", description="prox_annotate output (train.parquet, heldout.parquet)"
    )
    model: str = Field("tiny:small", description="base causal LM: local path, hub id or tiny:<size>")
    output_dir: str = Field(
        "outputs/prox_refiner", description="model/ (or model_doc/, model_chunk/), summary.json"
    )
    levels: Literal["joint", "separate"] = Field(
        "joint", description="one model for both levels, or one each"
    )
    eval_examples: int = Field(64, ge=0, description="held-out examples for the eval loss (per model)")
    keep_chunk_share: float = Field(
        1.0, gt=0, le=1, description="share of the keep_chunk() chunk examples trained on (the easiest half)"
    )
    train: TrainLoopConfig = TrainLoopConfig(num_workers=1, zero_stage=0, lr=1e-3)


def load_examples(data: str | Path, split: str, level: str | None = None) -> list[dict[str, Any]]:
    """The annotation's examples of `split` (and `level`), in the file's deterministic order."""
    rows = pq.read_table(Path(data) / f"{split}.parquet").to_pylist()
    return [r for r in rows if level is None or r["level"] == level]


def annotation_summary(data: str | Path) -> dict[str, Any]:
    return json.loads((Path(data) / "summary.json").read_text())


def check_prompts(examples: list[dict[str, Any]], tokenizer, lm: LMConfig) -> None:
    """Raise `InputError` unless this tokenizer renders the examples' doc prompts exactly as annotated."""
    docs = [e for e in examples if e["level"] == "doc"][:_PROMPT_CHECKS]
    rendered = LMGenerator(lm).doc_prompts(
        [e["source"] for e in docs], tokenizer, lm.doc_engine.max_model_len
    )
    for example, ids in zip(docs, rendered):
        if list(example["prompt_ids"]) != ids:
            raise InputError(
                f"data: the prompt of {example['doc_id']} differs when rendered with this model's tokenizer; "
                "annotate with lm.doc_engine.model set to a model sharing its tokenizer and chat template"
            )


def check(cfg: RefinerTrainConfig) -> None:
    """The annotation and the model exist (before Ray starts)."""
    require_path(cfg.data, "data")
    for name in ("train.parquet", "heldout.parquet", "summary.json"):
        require_path(Path(cfg.data) / name, f"data ({name})")
    require_model(cfg.model, "model")


def run(cfg: RefinerTrainConfig) -> Result:
    """Train on the current Ray cluster; export HF-format model(s) with refiner.json, write summary.json."""
    check(cfg)
    out = Path(cfg.output_dir).resolve()
    with Workflow("train_prox_refiner", cfg, out) as wf:
        annotation = annotation_summary(cfg.data)
        lm = LMConfig.model_validate(annotation["lm"])
        model_path = resolve_model_path(cfg.model)
        tokenizer = load_tokenizer(EngineConfig(model=model_path))
        train, held = load_examples(cfg.data, "train"), load_examples(cfg.data, "heldout")
        check_prompts(train, tokenizer, lm)
        groups = {"model": None} if cfg.levels == "joint" else {"model_doc": "doc", "model_chunk": "chunk"}
        summaries = {}
        for name, level in groups.items():
            with wf.phase(f"train {name}"):
                summaries[name] = _train_one(
                    cfg, name, level, model_path, tokenizer, train, held, out, annotation
                )
        summary = {"levels": cfg.levels, "models": summaries, "prompt_preset": annotation["prompt_preset"]}
        loss = {k: round(s["final_metrics"].get("loss", float("nan")), 4) for k, s in summaries.items()}
        return wf.finish(summary, f"refiner trained: final loss {loss} -> {out}")


def _train_one(cfg, name, level, model_path, tokenizer, train, held, out: Path, annotation) -> dict[str, Any]:
    def rows(examples):
        return [
            {"prompt_ids": list(e["prompt_ids"]), "response_ids": response_ids(tokenizer, e["program"])}
            for e in examples
            if level is None or e["level"] == level
        ]

    # Chunks that need no change are about half of the data and the first thing a model learns; a fixed
    # hash of the example picks the share kept, so the choice does not depend on the order of the rows.
    train = [e for e in train if e["program"] != "keep_chunk()" or _bucket(e) < cfg.keep_chunk_share]
    train_rows, eval_rows = rows(train), rows(held)[: cfg.eval_examples]
    task = SFTTask(model_path, tokenizer.pad_token_id, train_rows, eval_rows, seed=cfg.train.seed)
    log.info(
        "refiner %s: SFT of %s on %d examples (%d held out)", name, cfg.model, len(train_rows), len(eval_rows)
    )
    run_dir = out / "runs" / name  # history.jsonl and this model's summary.json
    run_dir.mkdir(parents=True, exist_ok=True)
    result = fit(task, cfg.train, storage_path=out / "ray", name=name, export_dir=out / name)
    stats = {"train_examples": len(train_rows), "eval_examples": len(eval_rows)}
    summary = training_summary(run_dir, result, stats)
    write_json(
        out / name / REFINER_FILE,
        {
            "prompt_preset": annotation["prompt_preset"],
            "levels": [level] if level else ["doc", "chunk"],
            "lm": annotation["lm"],
            "teacher": annotation["teacher"],
            "data": str(Path(cfg.data).resolve()),
            "train_examples": len(train_rows),
            "base_model": cfg.model,
        },
    )
    return summary


def _bucket(example: dict[str, Any]) -> float:
    """A number in [0, 1) fixed by the example's document and chunk."""
    digest = hashlib.sha256(f"{example['doc_id']}/{example['chunk_index']}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
