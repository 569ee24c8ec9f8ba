"""`eval_conflicts`: a conflict set through one or more detectors, on Ray Data through the one engine stage.

Input: a conflict set (JSONL of `ConflictPair`, e.g. `make_conflicts`' pairs.jsonl or the shipped
`examples/conflicts/pairs.jsonl`). Every detector in `detectors` is one task of one engine-stage pass: the
`llm` detectors ask their engine (detectors naming equal engines share one), the `nli` and `consistency`
detectors load their classifier once per actor. A pair an engine refuses gets an error for that detector
only and is left out of that detector's metrics.

Outputs in `output_dir`: predictions.parquet (every pair with `<detector>_conflict`, `<detector>_score`,
`<detector>_error`), errors/errors.parquet (unreadable lines; refused pairs), metrics.json (per detector:
per-class P/R/F1, P/R/F1 per type and per kind, accuracy per intensity), report.md, conflicts.png,
summary.json, run.json. Only `run` touches Ray.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import Field, field_validator

from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, engine_map, score_rows
from rayflow.eval.conflicts.detectors import Detection, DetectorConfig, LLMDetector, build_detector
from rayflow.eval.conflicts.metrics import detector_metrics, plot_metrics
from rayflow.eval.conflicts.pairs import read_pairs
from rayflow.llm import Engine, PromptRejected, resolve_model_path
from rayflow.runinfo import write_json
from rayflow.workflow import Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)

PAIR_FIELDS = [
    ("id", pa.string()),
    ("set_id", pa.string()),
    ("question", pa.string()),
    ("evidence_a", pa.string()),
    ("evidence_b", pa.string()),
    ("conflict", pa.bool_()),
    ("kind", pa.string()),
    ("type", pa.string()),
    ("intensity", pa.string()),
    ("source", pa.string()),
    ("line", pa.int64()),
]


class EvalConflictsConfig(Config):
    """Conflict-detector evaluation: a conflict set in, per-type and per-intensity metrics out."""

    input: str = Field("examples/conflicts/pairs.jsonl", description="conflict set: JSONL file or directory")
    output_dir: str = Field("outputs/eval_conflicts", description="where predictions, metrics, report go")
    detectors: list[DetectorConfig] = Field(
        default_factory=lambda: [DetectorConfig(kind="nli")],
        description="the detectors compared (kind nli|consistency|llm, model, threshold, engine, name)",
    )
    stage: StageConfig = Field(StageConfig(batch_size=32), description="the detector actors")

    @field_validator("detectors")
    @classmethod
    def _distinct_names(cls, detectors: list[DetectorConfig]) -> list[DetectorConfig]:
        names = [d.label for d in detectors]
        if not names:
            raise ValueError("give at least one detector")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"detector names repeat: {repeated}; set `name` to tell them apart")
        return detectors


def _schema(detectors: list[DetectorConfig]) -> pa.Schema:
    fields = list(PAIR_FIELDS)
    for d in detectors:
        fields += [(f"{d.label}_conflict", pa.bool_()), (f"{d.label}_score", pa.float64()),
                   (f"{d.label}_error", pa.string())]  # fmt: skip
    return pa.schema(fields)


class DetectTask:
    """Engine task: one detector's verdict on every pair of the batch."""

    def __init__(self, cfg: DetectorConfig, schema: pa.Schema):
        self.cfg = cfg
        self.schema = schema
        self.engine = cfg.engine if cfg.kind == "llm" else None
        self._detector = None  # a classifier detector, loaded on the actor's first batch

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None:
        pairs = [(r["evidence_a"], r["evidence_b"], r["question"]) for r in rows]
        if self.cfg.kind == "llm":
            detector = LLMDetector(self.cfg, engine)
            found: list[Detection | PromptRejected] = []
            for result in score_rows(engine, [detector.scoring_pairs(p) for p in pairs]):
                if isinstance(result, PromptRejected):
                    found.append(result)
                else:
                    yes, no = result
                    found.append(detector.decide(sum(yes.logprobs), sum(no.logprobs)))
        else:
            if self._detector is None:
                self._detector = build_detector(self.cfg)
            found = self._detector.detect(pairs)
        name = self.cfg.label
        for row, d in zip(rows, found):
            rejected = isinstance(d, PromptRejected)
            row[f"{name}_conflict"] = None if rejected else d.conflict
            row[f"{name}_score"] = None if rejected else d.score
            row[f"{name}_error"] = f"the engine refused the pair: {d.reason}" if rejected else None


def check(cfg: EvalConflictsConfig) -> None:
    """The conflict set and every detector's model exist (before Ray starts)."""
    require_path(cfg.input, "input")
    for i, d in enumerate(cfg.detectors):
        if d.kind == "llm":
            require_model(d.engine.model, f"detectors[{i}].engine.model")
        else:
            require_model(d.model, f"detectors[{i}].model")


def run(cfg: EvalConflictsConfig) -> Result:
    """Run every detector over the conflict set on the current Ray cluster; write the outputs listed in the
    module docstring to `cfg.output_dir`."""
    import ray

    check(cfg)
    out = Path(cfg.output_dir)
    schema = _schema(cfg.detectors)
    with Workflow("eval_conflicts", cfg, out) as wf:
        with wf.phase("read"):
            rows, errors = read_pairs(cfg.input)
            lines_in = len(rows) + len(errors)
        done = pd.DataFrame(columns=schema.names)
        if rows:
            with wf.phase("detect"):
                names = ", ".join(d.label for d in cfg.detectors)
                log.info("detecting conflicts in %d pairs with %s", len(rows), names)
                for d in cfg.detectors:
                    if d.kind == "llm" and d.engine.model.startswith("tiny:"):
                        resolve_model_path(d.engine.model)  # build once here, not in every actor
                tasks = [DetectTask(d, schema) for d in cfg.detectors]
                ds = engine_map(ray.data.from_items(rows), tasks, cfg.stage)
                done = ds.to_pandas().sort_values(["source", "line"], kind="stable").reset_index(drop=True)
        metrics: dict[str, dict] = {}
        with wf.phase("report"):
            for d in cfg.detectors:
                name = d.label
                refused = done[done[f"{name}_error"].notna()]
                errors += [{"source": r["source"], "line": int(r["line"]), "reason": f"{name}: {r[f'{name}_error']}",
                            "raw": json.dumps({"id": r["id"]})} for _, r in refused.iterrows()]  # fmt: skip
                judged = done[done[f"{name}_error"].isna()]
                records = [{"conflict": bool(r["conflict"]), "pred": bool(r[f"{name}_conflict"]), "kind": r["kind"],
                            "type": _value(r["type"]), "intensity": _value(r["intensity"])}
                           for _, r in judged.iterrows()]  # fmt: skip
                metrics[name] = {"detector": d.model_dump(mode="json"), **detector_metrics(records)}
            write_outputs(out, cfg, done, errors, metrics)
        summary = {"lines_in": lines_in, "pairs": len(done), "errors": len(errors),
                   "f1": {n: round(m["classes"]["conflict"]["f1"], 4) for n, m in metrics.items()},
                   "accuracy": {n: round(m["accuracy"], 4) for n, m in metrics.items()}}  # fmt: skip
        best = ", ".join(f"{n} F1 {f:.3f}" for n, f in summary["f1"].items())
        return wf.finish(summary, f"{len(done)} pairs ({best}); {len(errors)} errors -> {out.resolve()}/report.md")


def _value(x: Any) -> Any:
    """A pandas cell as plain Python: a missing string (NA/None) is None."""
    return None if pd.isna(x) else x


def write_outputs(out: Path, cfg: EvalConflictsConfig, done: pd.DataFrame, errors: list[dict],
                  metrics: dict[str, dict]) -> None:  # fmt: skip
    """predictions.parquet, errors/errors.parquet, metrics.json, report.md and conflicts.png."""
    (out / "errors").mkdir(parents=True, exist_ok=True)
    done.to_parquet(out / "predictions.parquet", index=False)
    pd.DataFrame(errors, columns=["source", "line", "reason", "raw"]).to_parquet(out / "errors" / "errors.parquet")
    write_json(out / "metrics.json", metrics)
    lines = [f"# Conflict detection: `{cfg.input}`", "",
             ("Conflict is the positive class. Types and kinds group every pair of a set (its corroborating pairs "
             "too); intensities are factoid sets, where every pair conflicts (accuracy = recall)."), "",
             "| detector | n | accuracy | P conflict | R conflict | F1 conflict | P no-conflict | R no-conflict | F1 no-conflict |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, m in metrics.items():
        c, nc = m["classes"]["conflict"], m["classes"]["no_conflict"]
        lines.append(f"| {name} | {m['n']} | {m['accuracy']:.3f} | {c['precision']:.3f} | {c['recall']:.3f} | "
                     f"{c['f1']:.3f} | {nc['precision']:.3f} | {nc['recall']:.3f} | {nc['f1']:.3f} |")  # fmt: skip
    for group in ("by_type", "by_kind"):
        lines += ["", f"## Conflict P/R/F1 {group.replace('_', ' ')}", "",
                  "| detector | group | n | P | R | F1 |", "|---|---|---|---|---|---|"]  # fmt: skip
        for name, m in metrics.items():
            lines += [f"| {name} | {g} | {v['n']} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |"
                      for g, v in m[group].items()]  # fmt: skip
    lines += ["", "## Accuracy per intensity (factoid sets)", "", "| detector | intensity | n | accuracy |",
              "|---|---|---|---|"]  # fmt: skip
    for name, m in metrics.items():
        lines += [f"| {name} | {k} | {v['n']} | {v['accuracy']:.3f} |" for k, v in m["by_intensity"].items()]
    if metrics:
        plot_metrics(out / "conflicts.png", metrics)
        lines += ["", "![F1 per type and accuracy per intensity](conflicts.png)"]
    lines += ["", f"{len(errors)} lines or pairs could not be evaluated (see errors/errors.parquet)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
