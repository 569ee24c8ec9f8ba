"""Iterative critique preference learning for a Safety-J-style judge (the paper's v1 -> v5 loop).

Each round, starting from the best judge so far:
1. sample `samples_per_item` critiques per training item (temperature > 0) under the `safetyj` protocol;
2. score each: first whether its verdict matches the gold label, then the meta-evaluation F1 of its critique
   against the item's reference AIUs (`rayflow.eval.safety.metaeval`, any chat model as meta-evaluator);
3. pair the best sample (chosen) with the worst (rejected) of each item whose samples differ in score;
4. train the judge on the pairs with the preference trainer's DPO (`rayflow.train.preference.run_dpo`, Ray
   Train + DeepSpeed, reference = the round's starting judge); the chosen/rejected texts and the SFT targets
   are in the protocol's own output format (`Protocol.render`);
5. evaluate the new checkpoint on the validation items (greedy critiques, macro meta-eval F1, label
   accuracy) and keep it as the best if its F1 beats the best so far (label accuracy breaks ties).

Optionally the loop starts with SFT on the training items' reference critiques (`sft_warmstart`), as
Safety-J's base judge was fine-tuned on critiques before preference learning; a random tiny model needs it
to produce the `[Answer]` format at all. Rows: `{query, response, label, aius: [..], critique?, lang?, id?}`.

    run(TrainJudgeConfig(...))  # on a running Ray cluster; the workflow of `jobs/train_judge.py`

Writes under `output_dir`: `sft/`, `round_<r>/` (samples.jsonl, pairs.jsonl, model/, the DPO run's history,
TensorBoard events and curve), `best/` (the best judge, HF format), `errors/errors.jsonl` (rows that could not be
read), `summary.json` (every round's validation figures and training outputs) and `run.json`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from rayflow.config import Config
from rayflow.eval.safety.judgement import Judgement
from rayflow.eval.safety.label_eval import parse_row
from rayflow.eval.safety.llm import from_engine
from rayflow.eval.safety.metaeval import MetaEvalConfig, MetaEvalItem, meta_evaluate
from rayflow.eval.safety.protocols import build_prompt, parse_judgement, render_judgement
from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine, resolve_model_path
from rayflow.train.loop import TrainLoopConfig
from rayflow.train.precompute import PrecomputeConfig
from rayflow.train.preference import DPOSettings, ReferenceSettings, run_dpo
from rayflow.train.preference_data import DataConfig
from rayflow.train.sft import SFTConfig, run_sft
from rayflow.workflow import InputError, Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)

SCHEME = "safetyj"  # the protocol the judge is trained to write


class TrainJudgeConfig(Config):
    """Iterative critique preference learning (Safety-J) on the preference trainer's DPO."""

    model: str = Field("tiny:tiny", description="the initial judge: path, hub id or tiny:<size>")
    data: str = Field("examples/safety/labelled.jsonl", description="JSONL rows with reference aius")
    val: str | None = Field(None, description="validation JSONL; None = hold out val_fraction of data")
    val_fraction: float = Field(0.25, gt=0, lt=1, description="share of data held out when val is None")
    output_dir: str = Field(
        "outputs/train_judge", description="sft/, round_<r>/, best/, errors/, summary.json, run.json"
    )
    rounds: int = Field(2, ge=1, description="R: sample -> score -> DPO -> evaluate, repeated")
    samples_per_item: int = Field(4, ge=2, description="k critiques sampled per training item")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the k critiques")
    max_tokens: int = Field(128, ge=1, description="new tokens per critique")
    judge_backend: str = Field(
        "hf", pattern="^(hf|vllm)$", description="engine backend for sampling and eval"
    )
    max_model_len: int = Field(1024, ge=16, description="judge context (tokens) for sampling and training")
    metaeval_engine: EngineConfig = EngineConfig(
        backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024
    )
    metaeval: MetaEvalConfig = MetaEvalConfig(extraction_max_tokens=128, verdict_max_tokens=32)
    sft_warmstart: bool = Field(True, description="SFT on the reference critiques before round 1")
    sft_train: TrainLoopConfig = TrainLoopConfig(num_workers=1, max_steps=30, lr=1e-3, micro_batch_size=4)
    dpo: DPOSettings = DPOSettings(beta=0.1)
    dpo_train: TrainLoopConfig = TrainLoopConfig(num_workers=1, max_steps=10, lr=5e-4, micro_batch_size=4)
    precompute: PrecomputeConfig = PrecomputeConfig(cpus_per_actor=0.5)
    max_prompt_length: int = Field(896, ge=1, description="judge prompt tokens (longer items are skipped)")
    seed: int = Field(0, description="validation split, sampling and engine seed")


def read_items(path: str) -> tuple[list[dict], list[dict]]:
    """Rows with gold label and reference AIUs; error records `{source, line, reason}` for the rest."""
    items, errors = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row, reason = parse_row(line, f"{Path(path).name}:{number}")
            if row is not None:
                raw = json.loads(line)
                aius = raw.get("aius")
                if (
                    not isinstance(aius, list)
                    or not aius
                    or not all(isinstance(a, str) and a.strip() for a in aius)
                ):
                    reason = (
                        "field 'aius' must be a non-empty list of strings (the reference critique's AIUs)"
                    )
                else:
                    items.append({**row, "aius": aius, "critique": str(raw.get("critique") or "")})
                    continue
            errors.append({"source": path, "line": number, "reason": reason})
    return items, errors


def split_items(items: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A deterministic split by hashed id: the same rows go to validation on every run."""

    def key(item: dict) -> str:
        return hashlib.sha1(f"{seed}:{item['id']}".encode()).hexdigest()

    ranked = sorted(items, key=key)
    n_val = max(1, round(val_fraction * len(items)))
    return ranked[n_val:], ranked[:n_val]


def judge_prompt(item: dict) -> list[dict[str, str]]:
    return build_prompt(SCHEME, item["query"], item["response"], item["lang"])


def reference_output(item: dict) -> str:
    """The item's gold label and reference critique as the judge writes them (the SFT target)."""
    return render_judgement(SCHEME, Judgement(label=item["label"], critique=item["critique"]), item["lang"])


def _texts(outputs: list) -> list[str]:
    """Generated texts; a prompt the engine refused counts as an empty output (it scores worst)."""
    return ["" if isinstance(o, PromptRejected) else o.text for o in outputs]


def sample_outputs(
    engine, items: list[dict], k: int, temperature: float, max_tokens: int, seed: int
) -> list[list[str]]:
    """k sampled judge outputs per item ([item][sample]); a refused prompt gives empty outputs."""
    prompts = [judge_prompt(it) for it in items]
    per_seed = []
    for j in range(k):
        params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + j)
        per_seed.append(_texts(engine.generate(prompts, params)))
    return [[texts[i] for texts in per_seed] for i in range(len(items))]


def score_outputs(
    items: list[dict], outputs: list[list[str]], meta_engine, cfg: MetaEvalConfig
) -> list[list[dict]]:
    """Per output: {label, correct, f1} with f1 the meta-evaluation F1 of its critique vs the reference AIUs."""
    flat = [(i, text) for i, texts in enumerate(outputs) for text in texts]
    parsed = [parse_judgement(SCHEME, text, items[i]["lang"]) for i, text in flat]
    meta_items = [
        MetaEvalItem(query=items[i]["query"], response=items[i]["response"], lang=items[i]["lang"],
                     hypothesis_critique=p.critique, reference_aius=items[i]["aius"])
        for (i, _), p in zip(flat, parsed)
    ]  # fmt: skip
    results = asyncio.run(meta_evaluate(meta_items, from_engine(meta_engine), cfg))
    scores: list[list[dict]] = [[] for _ in items]
    for (i, _), p, r in zip(flat, parsed, results):
        scores[i].append({"label": p.label, "correct": p.label == items[i]["label"], "f1": r.F1})
    return scores


def preference_pairs(items: list[dict], outputs: list[list[str]], scores: list[list[dict]]) -> list[dict]:
    """Chosen = the best output of an item by (correct label, meta F1), rejected = the worst; items whose
    outputs all score the same give no pair. Rows use the trainer's conversational layout."""
    pairs = []
    for item, texts, item_scores in zip(items, outputs, scores):
        keys = [(s["correct"], s["f1"]) for s in item_scores]
        ranked = sorted(range(len(texts)), key=keys.__getitem__)
        worst, best = ranked[0], ranked[-1]
        if keys[best] > keys[worst] and texts[best].strip() and texts[worst].strip():
            pairs.append({"id": item["id"], "prompt": judge_prompt(item), "chosen": texts[best],
                          "rejected": texts[worst]})  # fmt: skip
    return pairs


def evaluate_judge(engine, items: list[dict], meta_engine, cfg: TrainJudgeConfig) -> dict:
    """Greedy critiques on the validation items: macro meta-eval F1, label accuracy, parse rate."""
    prompts = [judge_prompt(it) for it in items]
    texts = _texts(engine.generate(prompts, SamplingParams(max_tokens=cfg.max_tokens)))
    scores = score_outputs(items, [[t] for t in texts], meta_engine, cfg.metaeval)
    parsed = [parse_judgement(SCHEME, t, it["lang"]) for t, it in zip(texts, items)]
    f1s = [s[0]["f1"] for s in scores]
    return {
        "meta_f1_macro": sum(f1s) / len(f1s) if f1s else 0.0,
        "label_accuracy": sum(s[0]["correct"] for s in scores) / len(scores) if scores else 0.0,
        "parse_rate": sum(p.parse_ok for p in parsed) / len(parsed) if parsed else 0.0,
    }


def check(cfg: TrainJudgeConfig) -> None:
    """The data files and the models exist (before Ray starts or a model loads)."""
    require_path(cfg.data, "data")
    require_path(cfg.val, "val")
    require_model(cfg.model, "model")
    require_model(cfg.metaeval_engine.model, "metaeval_engine.model")


def run(cfg: TrainJudgeConfig) -> Result:
    """Every round on the current Ray cluster; the best judge ends in `output_dir/best` (see the module doc)."""
    with Workflow("train_judge", cfg, cfg.output_dir) as wf:
        out = wf.output_dir.resolve()
        with wf.phase("data"):
            train_items, val_items, errors = _load(cfg)
            _write_jsonl(out / "errors" / "errors.jsonl", errors)
        log.info("%d training and %d validation items (%d rows rejected)", len(train_items), len(val_items),
                 len(errors))  # fmt: skip
        meta_engine = build_engine(cfg.metaeval_engine)
        try:
            summary = _rounds(cfg, wf, out, train_items, val_items, meta_engine)
        finally:
            meta_engine.close()
        summary.update(train_items=len(train_items), val_items=len(val_items), errors=len(errors))
        best = summary["best"]
        return wf.finish(
            summary,
            f"best judge: {best['source']} (val meta-F1 {best['val']['meta_f1_macro']:.3f}, label accuracy "
            f"{best['val']['label_accuracy']:.3f}) -> {best['model_dir']}",
        )


def _load(cfg: TrainJudgeConfig) -> tuple[list[dict], list[dict], list[dict]]:
    items, errors = read_items(cfg.data)
    if cfg.val:
        train_items, (val_items, val_errors) = items, read_items(cfg.val)
        errors += val_errors
    else:
        train_items, val_items = split_items(items, cfg.val_fraction, cfg.seed)
    if not train_items or not val_items:
        raise InputError(
            f"data: need training and validation items; got {len(train_items)} and {len(val_items)}"
        )
    return train_items, val_items, errors


def _rounds(cfg: TrainJudgeConfig, wf: Workflow, out: Path, train_items, val_items, meta_engine) -> dict:
    """SFT warm start, round-0 validation, then R rounds; returns the summary (sft, rounds, best), with each
    training run's final metrics and artefacts (model, TensorBoard events, curve)."""
    best_model = resolve_model_path(cfg.model)
    history: list[dict[str, Any]] = []
    sft = None
    if cfg.sft_warmstart:
        with wf.phase("sft"):
            log.info("SFT warm start on %d reference critiques", len(train_items))
            sft_rows = [{"id": it["id"], "prompt": judge_prompt(it), "response": reference_output(it)}
                        for it in train_items]  # fmt: skip
            _write_jsonl(out / "sft" / "data.jsonl", sft_rows)
            sft = run_sft(SFTConfig(model=best_model, output_dir=str(out / "sft"), train=cfg.sft_train,
                                    data=_data(cfg, out / "sft" / "data.jsonl")), name="judge-sft")  # fmt: skip
        best_model = str(out / "sft" / "model")
    with wf.phase("validate"):
        best_metrics = _validate(cfg, best_model, val_items, meta_engine)
    history.append({"round": 0, "model": best_model, "val": best_metrics, "pairs": 0, "kept": True})

    for r in range(1, cfg.rounds + 1):
        round_dir = out / f"round_{r}"
        with wf.phase("sample"):
            log.info("round %d/%d: sampling %d critiques per item from %s", r, cfg.rounds,
                     cfg.samples_per_item, best_model)  # fmt: skip
            engine = _engine(cfg, best_model)
            try:
                outputs = sample_outputs(engine, train_items, cfg.samples_per_item, cfg.temperature,
                                         cfg.max_tokens, cfg.seed + 1000 * r)  # fmt: skip
            finally:
                engine.close()  # the DPO run below needs the memory
        with wf.phase("score"):
            scores = score_outputs(train_items, outputs, meta_engine, cfg.metaeval)
            pairs = preference_pairs(train_items, outputs, scores)
            _write_jsonl(round_dir / "samples.jsonl", [
                {"id": it["id"], "outputs": o, "scores": s} for it, o, s in zip(train_items, outputs, scores)
            ])  # fmt: skip
            _write_jsonl(round_dir / "pairs.jsonl", pairs)
        entry: dict[str, Any] = {"round": r, "pairs": len(pairs), "started_from": best_model}
        if not pairs:
            log.info("round %d: every item's outputs scored alike; no preference pairs", r)
            entry.update(kept=False, note="every item's sampled outputs scored alike: no preference pairs")
            history.append(entry)
            continue
        with wf.phase("dpo"):
            log.info("round %d: DPO on %d pairs", r, len(pairs))
            # A round may yield fewer pairs than a micro-batch; the trainer needs one full micro-batch per rank.
            # (The copy is not validated; a size >= 1 is a valid one.)
            per_rank = max(1, len(pairs) // cfg.dpo_train.num_workers)
            train = cfg.dpo_train.model_copy(
                update={"micro_batch_size": min(cfg.dpo_train.micro_batch_size, per_rank)}
            )
            entry["training"] = run_dpo(best_model, _data(cfg, round_dir / "pairs.jsonl"), cfg.dpo,
                                        ReferenceSettings(kind="model"), train, cfg.precompute, round_dir,
                                        name=f"judge-dpo-{r}")  # fmt: skip
        candidate = str(round_dir / "model")
        with wf.phase("validate"):
            metrics = _validate(cfg, candidate, val_items, meta_engine)
        kept = _better(metrics, best_metrics)
        log.info("round %d: val meta-F1 %.3f, label accuracy %.3f: %s", r, metrics["meta_f1_macro"],
                 metrics["label_accuracy"], "kept" if kept else "discarded")  # fmt: skip
        entry.update(model=candidate, val=metrics, kept=kept)
        history.append(entry)
        if kept:
            best_model, best_metrics = candidate, metrics

    best_dir = out / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    shutil.copytree(best_model, best_dir)
    return {
        "sft": sft,
        "rounds": history,
        "best": {"source": best_model, "model_dir": str(best_dir), "val": best_metrics},
    }


def _data(cfg: TrainJudgeConfig, path: Path) -> DataConfig:
    return DataConfig(train=str(path), eval=None, eval_fraction=0, max_length=cfg.max_model_len,
                      max_prompt_length=cfg.max_prompt_length)  # fmt: skip


def _validate(cfg: TrainJudgeConfig, model: str, val_items: list[dict], meta_engine) -> dict:
    engine = _engine(cfg, model)
    try:
        return evaluate_judge(engine, val_items, meta_engine, cfg)
    finally:
        engine.close()


def _engine(cfg: TrainJudgeConfig, model: str):
    return build_engine(EngineConfig(backend=cfg.judge_backend, model=model, dtype="float32",
                                     max_model_len=cfg.max_model_len, seed=cfg.seed))  # fmt: skip


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _better(a: dict, b: dict) -> bool:
    return (a["meta_f1_macro"], a["label_accuracy"]) > (b["meta_f1_macro"], b["label_accuracy"])
