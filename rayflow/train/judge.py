"""Iterative critique preference learning for a Safety-J-style judge (the paper's v1 -> v5 loop).

Each round, starting from the best judge so far:
1. sample `samples_per_item` critiques per training item (temperature > 0) under the `safetyj` protocol;
2. score each: first whether its verdict matches the gold label, then the meta-evaluation F1 of its critique
   against the item's reference AIUs (`rayflow.eval.safety.metaeval`, any chat model as meta-evaluator);
3. pair the best sample (chosen) with the worst (rejected) of each item whose samples differ in score;
4. train the judge on the pairs with the preference trainer's DPO (`rayflow.train.preference.run_dpo`, Ray
   Train + DeepSpeed, reference = the round's starting judge);
5. evaluate the new checkpoint on the validation items (greedy critiques, macro meta-eval F1, label
   accuracy) and keep it as the best if its F1 beats the best so far (label accuracy breaks ties).

Optionally the loop starts with SFT on the training items' reference critiques (`sft_warmstart`), as
Safety-J's base judge was fine-tuned on critiques before preference learning; a random tiny model needs it
to produce the `[Answer]` format at all. Rows: `{query, response, label, aius: [..], critique?, lang?, id?}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from rayflow.config import Config
from rayflow.eval.safety.label_eval import parse_row
from rayflow.eval.safety.llm import Rejected, from_engine
from rayflow.eval.safety.metaeval import MetaEvalConfig, MetaEvalItem, meta_evaluate
from rayflow.eval.safety.protocols import build_prompt, parse_judgement
from rayflow.llm import EngineConfig, SamplingParams, build_engine, resolve_model_path
from rayflow.runinfo import write_json
from rayflow.train.loop import TrainLoopConfig
from rayflow.train.precompute import PrecomputeConfig
from rayflow.train.preference import DPOSettings, ReferenceSettings, run_dpo
from rayflow.train.preference_data import DataConfig
from rayflow.train.sft import SFTConfig, run_sft

ANSWER = {"en": {"safe": "safe", "unsafe": "unsafe"}, "zh": {"safe": "安全", "unsafe": "不安全"}}
SECTIONS = {"en": ("[Answer]", "[Analysis]"), "zh": ("[答案]", "[分析]")}


class TrainJudgeConfig(Config):
    """Iterative critique preference learning (Safety-J) on the preference trainer's DPO."""

    model: str = Field("tiny:tiny", description="the initial judge: path, hub id or tiny:<size>")
    data: str = Field("examples/safety/labelled.jsonl", description="JSONL rows with reference aius")
    val: str | None = Field(None, description="validation JSONL; None = hold out val_fraction of data")
    val_fraction: float = Field(0.25, gt=0, lt=1)
    output_dir: str = Field("outputs/train_judge", description="sft/, round_<r>/, best/, history.json")
    rounds: int = Field(2, ge=1, description="R: sample -> score -> DPO -> evaluate, repeated")
    samples_per_item: int = Field(4, ge=2, description="k critiques sampled per training item")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the k critiques")
    max_tokens: int = Field(128, ge=1, description="new tokens per critique")
    judge_backend: str = Field(
        "hf", pattern="^(hf|vllm)$", description="engine backend for sampling and eval"
    )
    max_model_len: int = Field(1024, ge=16)
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
    seed: int = 0


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
    return build_prompt("safetyj", item["query"], item["response"], item["lang"])


def reference_output(item: dict) -> str:
    """The reference critique written in the Safety-J output format (the SFT target)."""
    answer, analysis = SECTIONS[item["lang"]]
    return f"{answer} {ANSWER[item['lang']][item['label']]}\n{analysis} {item['critique']}"


def sample_outputs(
    engine, items: list[dict], k: int, temperature: float, max_tokens: int, seed: int
) -> list[list[str]]:
    """k sampled judge outputs per item ([item][sample]); a refused prompt gives empty outputs."""
    prompts = [judge_prompt(it) for it in items]
    generate = from_engine(engine)
    per_seed = []
    for j in range(k):
        params = SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + j)
        per_seed.append(asyncio.run(generate(prompts, params)))
    return [["" if isinstance(s[i], Rejected) else s[i].text for s in per_seed] for i in range(len(items))]


def score_outputs(
    items: list[dict], outputs: list[list[str]], meta_engine, cfg: MetaEvalConfig
) -> list[list[dict]]:
    """Per output: {label, correct, f1} with f1 the meta-evaluation F1 of its critique vs the reference AIUs."""
    flat = [(i, text) for i, texts in enumerate(outputs) for text in texts]
    parsed = [parse_judgement("safetyj", text, items[i]["lang"]) for i, text in flat]
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
    """Greedy critiques on the validation items: macro/micro meta-eval F1, label accuracy, parse rate."""
    generate = from_engine(engine)
    outs = asyncio.run(
        generate([judge_prompt(it) for it in items], SamplingParams(max_tokens=cfg.max_tokens))
    )
    texts = ["" if isinstance(o, Rejected) else o.text for o in outs]
    scores = score_outputs(items, [[t] for t in texts], meta_engine, cfg.metaeval)
    parsed = [parse_judgement("safetyj", t, it["lang"]) for t, it in zip(texts, items)]
    f1s = [s[0]["f1"] for s in scores]
    return {
        "meta_f1_macro": sum(f1s) / len(f1s) if f1s else 0.0,
        "label_accuracy": sum(s[0]["correct"] for s in scores) / len(scores) if scores else 0.0,
        "parse_rate": sum(p.parse_ok for p in parsed) / len(parsed) if parsed else 0.0,
    }


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


def run_train_judge(cfg: TrainJudgeConfig) -> dict:
    """Run every round on the current Ray cluster; returns the history. The best judge ends in `output_dir/best`."""
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    items, errors = read_items(cfg.data)
    if cfg.val:
        train_items, (val_items, val_errors) = items, read_items(cfg.val)
        errors += val_errors
    else:
        train_items, val_items = split_items(items, cfg.val_fraction, cfg.seed)
    _write_jsonl(out / "errors" / "errors.jsonl", errors)
    if not train_items or not val_items:
        raise ValueError(f"need training and validation items; got {len(train_items)} and {len(val_items)}")
    meta_engine = build_engine(cfg.metaeval_engine)
    best_model = resolve_model_path(cfg.model)
    history: list[dict[str, Any]] = []

    if cfg.sft_warmstart:
        sft_rows = [
            {"id": it["id"], "prompt": judge_prompt(it), "response": reference_output(it)}
            for it in train_items
        ]
        _write_jsonl(out / "sft" / "data.jsonl", sft_rows)
        run_sft(SFTConfig(model=best_model, output_dir=str(out / "sft"), train=cfg.sft_train,
                          data=DataConfig(train=str(out / "sft" / "data.jsonl"), eval=None, eval_fraction=0,
                                          max_length=cfg.max_model_len, max_prompt_length=cfg.max_prompt_length)),
                name="judge-sft")  # fmt: skip
        best_model = str(out / "sft" / "model")
    engine = _engine(cfg, best_model)
    best_metrics = evaluate_judge(engine, val_items, meta_engine, cfg)
    history.append({"round": 0, "model": best_model, "val": best_metrics, "pairs": 0, "kept": True})

    for r in range(1, cfg.rounds + 1):
        round_dir = out / f"round_{r}"
        outputs = sample_outputs(engine, train_items, cfg.samples_per_item, cfg.temperature, cfg.max_tokens,
                                 cfg.seed + 1000 * r)  # fmt: skip
        engine.close()
        scores = score_outputs(train_items, outputs, meta_engine, cfg.metaeval)
        pairs = preference_pairs(train_items, outputs, scores)
        _write_jsonl(round_dir / "samples.jsonl", [
            {"id": it["id"], "outputs": o, "scores": s} for it, o, s in zip(train_items, outputs, scores)
        ])  # fmt: skip
        _write_jsonl(round_dir / "pairs.jsonl", pairs)
        entry: dict[str, Any] = {"round": r, "pairs": len(pairs), "started_from": best_model}
        if not pairs:
            entry.update(kept=False, note="every item's sampled outputs scored alike: no preference pairs")
            history.append(entry)
            engine = _engine(cfg, best_model)
            continue
        # A round may yield fewer pairs than a micro-batch; the trainer needs one full micro-batch per rank.
        per_rank = max(1, len(pairs) // cfg.dpo_train.num_workers)
        train = cfg.dpo_train.model_copy(
            update={"micro_batch_size": min(cfg.dpo_train.micro_batch_size, per_rank)}
        )
        run_dpo(best_model,
                DataConfig(train=str(round_dir / "pairs.jsonl"), eval=None, eval_fraction=0,
                           max_length=cfg.max_model_len, max_prompt_length=cfg.max_prompt_length),
                cfg.dpo, ReferenceSettings(kind="model"), train, cfg.precompute, round_dir,
                name=f"judge-dpo-{r}")  # fmt: skip
        candidate = str(round_dir / "model")
        engine = _engine(cfg, candidate)
        metrics = evaluate_judge(engine, val_items, meta_engine, cfg)
        kept = _better(metrics, best_metrics)
        entry.update(model=candidate, val=metrics, kept=kept)
        history.append(entry)
        if kept:
            best_model, best_metrics = candidate, metrics
        else:
            engine.close()
            engine = _engine(cfg, best_model)
    engine.close()

    best_dir = out / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    shutil.copytree(best_model, best_dir)
    result = {"rounds": history, "best": {"source": best_model, "model_dir": str(best_dir), "val": best_metrics},
              "train_items": len(train_items), "val_items": len(val_items), "errors": len(errors)}  # fmt: skip
    write_json(out / "history.json", result)
    return result
