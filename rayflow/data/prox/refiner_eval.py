"""Evaluate a ProX refiner against its teacher on the annotation's held-out split.

The refiner writes a program for every held-out prompt (the same token ids the ProX job sends; greedy, with the
job's program budgets), on Ray Data through the engine stage. Then, against the teacher's programs:

* doc level: precision / recall / F1 of `drop_doc` (a drop is the positive class), from `execute_doc_program`;
* chunk level, line removal: a document's removed lines are the union of the lines its chunk programs'
  `remove_lines` calls name (`all=True`: every line), clipped to the document, as the job runs the joined
  programs on the whole document. Precision / recall / F1 are pooled over every line of every held-out
  document (removed by the teacher vs by the refiner);
* `normalize_match`: per document, the `normalize` calls (source, target) of both sides as multisets; the share
  of all calls, on either side, that the other side has exactly: matched / (teacher + refiner - matched);
* `parse_fail_rate`: the share of the refiner's programs (doc and chunk) with an error op or no valid call.

Outputs: summary.json (the figures, also per source: generated pages vs input corpora), disagreements.jsonl
(every example where the two differ) and report.md (figures plus examples of disagreement).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, engine_map, generate_rows
from rayflow.data.prox.executor import execute_doc_program
from rayflow.data.prox.lm import LMConfig
from rayflow.data.prox.parser import FUNCTIONS_CHUNK, FUNCTIONS_DOC, parse_program
from rayflow.llm import Engine, EngineConfig, PromptRejected, SamplingParams
from rayflow.workflow import Result, Workflow, require_model, require_path


class RefinerEvalConfig(Config):
    """Refiner evaluation on the held-out split of an annotation."""

    data: str = Field(
        "outputs/prox_annotate", description="prox_annotate output (heldout.parquet, summary.json)"
    )
    engine: EngineConfig = Field(
        EngineConfig(backend="hf", model="tiny:refiner"), description="the refiner (both levels)"
    )
    output_dir: str = Field("outputs/prox_refiner_eval", description="summary.json, report.md, disagreements")
    max_documents: int | None = Field(None, ge=1, description="evaluate the first N held-out documents only")
    report_examples: int = Field(8, ge=0, description="disagreements shown in report.md")
    stage: StageConfig = StageConfig(batch_size=32)


def prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """Precision, recall and F1 from counts; a ratio with a zero denominator is None."""
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r else (0.0 if tp + fp + fn else None)
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def removed_lines(programs: list[str], n_lines: int) -> set[int]:
    """The lines (0-based) that `remove_lines` calls in `programs` name, clipped to a document of `n_lines`."""
    removed: set[int] = set()
    for program in programs:
        for name, a, b in parse_program(program, FUNCTIONS_CHUNK).ops:
            if name == "remove_lines":
                lo, hi = (0, n_lines - 1) if a is None else (max(a, 0), min(b, n_lines - 1))
                removed.update(range(lo, hi + 1))
    return removed


def normalize_calls(programs: list[str]) -> Counter:
    """The multiset of `(source_str, target_str)` of the `normalize` calls in `programs` (target "" if absent)."""
    return Counter(
        (a, b or "")
        for program in programs
        for name, a, b in parse_program(program, FUNCTIONS_CHUNK).ops
        if name == "normalize"
    )


def parse_failed(program: str, level: str) -> bool:
    """An error op or no valid call: the program does not say what its writer meant."""
    parsed = parse_program(program, FUNCTIONS_DOC if level == "doc" else FUNCTIONS_CHUNK)
    return parsed.n_error_ops > 0 or not parsed.ops


def score(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of the module doc from examples holding `program` (teacher) and `refiner_program`."""
    docs: dict[str, dict[str, Any]] = defaultdict(lambda: {"chunks": []})
    for e in examples:
        if e["level"] == "doc":
            docs[e["doc_id"]]["doc"] = e
        else:
            docs[e["doc_id"]]["chunks"].append(e)
    d_tp = d_fp = d_fn = l_tp = l_fp = l_fn = n_match = n_teacher = n_refiner = n_lines_total = 0
    for doc in docs.values():
        if "doc" in doc:
            t = not execute_doc_program(doc["doc"]["program"]).keep
            r = not execute_doc_program(doc["doc"]["refiner_program"]).keep
            d_tp, d_fp, d_fn = d_tp + (t and r), d_fp + (r and not t), d_fn + (t and not r)
        if doc["chunks"]:
            n_lines = max(c["last_line"] for c in doc["chunks"]) + 1
            n_lines_total += n_lines
            teacher = removed_lines([c["program"] for c in doc["chunks"]], n_lines)
            refiner = removed_lines([c["refiner_program"] for c in doc["chunks"]], n_lines)
            l_tp, l_fp, l_fn = (
                l_tp + len(teacher & refiner),
                l_fp + len(refiner - teacher),
                l_fn + len(teacher - refiner),
            )
            tn, rn = (
                normalize_calls([c["program"] for c in doc["chunks"]]),
                normalize_calls([c["refiner_program"] for c in doc["chunks"]]),
            )
            n_match += sum((tn & rn).values())
            n_teacher += sum(tn.values())
            n_refiner += sum(rn.values())
    fails = [parse_failed(e["refiner_program"], e["level"]) for e in examples]
    by_level = {
        level: round(sum(f for f, e in zip(fails, examples) if e["level"] == level) / n, 4) if n else None
        for level in ("doc", "chunk")
        for n in [sum(e["level"] == level for e in examples)]
    }
    union = n_teacher + n_refiner - n_match
    doc = prf(d_tp, d_fp, d_fn)
    lines = prf(l_tp, l_fp, l_fn)
    return {
        "doc_f1": doc["f1"],
        "chunk_line_f1": lines["f1"],
        "normalize_match": n_match / union if union else None,
        "parse_fail_rate": sum(fails) / len(fails) if fails else None,
        "doc": doc,
        "chunk_lines": {**lines, "lines": n_lines_total},
        "normalize": {"matched": n_match, "teacher": n_teacher, "refiner": n_refiner},
        "parse_fail_by_level": by_level,
        "documents": len(docs),
        "programs": len(examples),
    }


class RefineTask:
    """Engine task: the refiner's program for each example's prompt ids (budgets per level, greedy)."""

    schema = pa.schema([("key", pa.int64()), ("refiner_program", pa.string()), ("truncated", pa.bool_())])

    def __init__(self, engine: EngineConfig, lm: LMConfig):
        self.engine = engine
        self.max_tokens = {"doc": lm.doc_max_tokens, "chunk": lm.chunk_max_tokens}

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None:
        for level, max_tokens in self.max_tokens.items():
            mine = [r for r in rows if r["level"] == level]
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
            for row, out in zip(mine, generate_rows(engine, [[r["prompt_ids"]] for r in mine], params)):
                rejected = isinstance(out, PromptRejected)
                row["refiner_program"] = "" if rejected else out[0].text.strip(" ")
                row["truncated"] = (not rejected) and out[0].finish_reason == "length"
        for row in rows:
            for key in list(row):
                if key not in self.schema.names:
                    del row[key]


def check(cfg: RefinerEvalConfig) -> None:
    require_path(Path(cfg.data) / "heldout.parquet", "data (heldout.parquet)")
    require_path(Path(cfg.data) / "summary.json", "data (summary.json)")
    require_model(cfg.engine.model, "engine.model")


def run(cfg: RefinerEvalConfig) -> Result:
    """Evaluate on the current Ray cluster; writes summary.json, disagreements.jsonl and report.md."""
    import ray

    check(cfg)
    out = Path(cfg.output_dir)
    with Workflow("eval_prox_refiner", cfg, out) as wf:
        annotation = json.loads((Path(cfg.data) / "summary.json").read_text())
        examples = pq.read_table(Path(cfg.data) / "heldout.parquet").to_pylist()
        if cfg.max_documents is not None:
            keep = sorted({e["doc_id"] for e in examples})[: cfg.max_documents]
            examples = [e for e in examples if e["doc_id"] in set(keep)]
        with wf.phase("generate"):
            items = [
                {"key": i, "level": e["level"], "prompt_ids": e["prompt_ids"]} for i, e in enumerate(examples)
            ]
            ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // cfg.stage.batch_size))
            task = RefineTask(cfg.engine, LMConfig.model_validate(annotation["lm"]))
            for row in engine_map(ds, [task], cfg.stage).take_all():
                examples[row["key"]].update(
                    refiner_program=row["refiner_program"], truncated=row["truncated"]
                )
        with wf.phase("score"):
            summary = score(examples)
            summary["truncated"] = sum(e["truncated"] for e in examples)
            summary["by_source"] = {
                source: score([e for e in examples if _source(e) == source])
                for source in sorted({_source(e) for e in examples})
            }
            summary.update(
                refiner=cfg.engine.model,
                teacher=annotation["teacher"],
                prompt_preset=annotation["prompt_preset"],
            )
            disagreements = [e for e in examples if _disagree(e)]
            _write_report(out, summary, disagreements, cfg.report_examples)
        return wf.finish(
            summary,
            f"refiner vs teacher on {summary['documents']} held-out documents: doc F1 {_fmt(summary['doc_f1'])}, "
            f"chunk line F1 {_fmt(summary['chunk_line_f1'])}, normalize match {_fmt(summary['normalize_match'])}, "
            f"parse failures {_fmt(summary['parse_fail_rate'])} -> {out}",
        )


def _source(example: dict[str, Any]) -> str:
    return "generated" if example["doc_id"].startswith("heldout-") else "input"


def _disagree(e: dict[str, Any]) -> bool:
    if e["level"] == "doc":
        return execute_doc_program(e["program"]).keep != execute_doc_program(e["refiner_program"]).keep
    n = e["last_line"] + 1
    return removed_lines([e["program"]], n) != removed_lines([e["refiner_program"]], n) or normalize_calls(
        [e["program"]]
    ) != normalize_calls([e["refiner_program"]])


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _write_report(out: Path, summary: dict[str, Any], disagreements: list[dict[str, Any]], n: int) -> None:
    keys = (
        "doc_id",
        "level",
        "chunk_index",
        "first_line",
        "last_line",
        "source",
        "program",
        "refiner_program",
    )
    with open(out / "disagreements.jsonl", "w") as fh:
        fh.writelines(json.dumps({k: e[k] for k in keys}) + "\n" for e in disagreements)
    lines = [
        f"# ProX refiner vs teacher ({summary['teacher']}), {summary['documents']} held-out documents",
        "",
        f"refiner `{summary['refiner']}`, prompt preset `{summary['prompt_preset']}`",
        "",
        "| figure | all | " + " | ".join(summary["by_source"]) + " |",
        "|---|---|" + "---|" * len(summary["by_source"]),
    ]
    for key in ("doc_f1", "chunk_line_f1", "normalize_match", "parse_fail_rate"):
        row = [_fmt(summary[key])] + [_fmt(s[key]) for s in summary["by_source"].values()]
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"## Disagreements ({len(disagreements)} programs; the first {min(n, len(disagreements))})",
        "",
    ]
    for e in disagreements[:n]:
        lines += [
            f"### {e['doc_id']} {e['level']} {e['chunk_index']} (lines {e['first_line']}-{e['last_line']})",
            "```text",
            e["source"][:1200],
            "```",
            "teacher:",
            "```python",
            e["program"],
            "```",
            "refiner:",
            "```python",
            e["refiner_program"] or "(empty)",
            "```",
            "",
        ]
    (out / "report.md").write_text("\n".join(lines))
