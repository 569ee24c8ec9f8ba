"""eval_rag: RAGChecker over a batch of RAG answers on Ray Data, through the one engine stage.

Items are read and checked on the driver (a bad one is an error record naming its field), then go through
one engine stage with two tasks: `ExtractTask` extracts the claims an item lacks with `extractor_name`,
`CheckTask` checks them with `checker_name` (an LLM through the engine layer, jointly or one claim per
prompt, or an NLI classifier: `nli`, `nli:<hub id or dir>`, `nli:tiny`) and computes the item's metrics.
Equal extractor and checker engines are one model per actor. Claims and labels go to a label cache under
`output_dir`, so a rerun (after a crash, or with more items) skips what is already labelled.

Outputs: `output_path` (RAGChecker's JSON: items with claims, labels and per-item metrics, and the overall
`metrics`), and in `output_dir`: errors.jsonl, report.md, metrics.png, summary.json, run.json, label_cache/.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator

from rayflow.data.engine_stage import StageConfig, engine_map
from rayflow.eval.ragchecker.checking import (
    CheckingConfig,
    LabelCache,
    LLMChecker,
    LLMExtractor,
    NLIChecker,
    RAGEvaluator,
)
from rayflow.eval.ragchecker.items import read_items
from rayflow.eval.ragchecker.metrics import ALL_METRICS, METRIC_GROUPS, aggregate, select_metrics
from rayflow.eval.safety.llm import from_engine
from rayflow.llm import Engine, EngineConfig, resolve_model_path
from rayflow.runinfo import write_json
from rayflow.workflow import Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)


class EvalRagConfig(CheckingConfig):
    """RAGChecker over RAG answers (keys named as ragchecker-cli's flags where they mean the same)."""

    input_path: str = Field(
        "examples/ragchecker/inputs.jsonl",
        description='{"results": [...]} JSON, JSONL of items, saved /v1/query answers, or a directory of them',
    )
    output_dir: str = Field("outputs/eval_rag", description="report, plot, errors, label cache, run.json")
    output_path: str | None = Field(
        None,
        description="RAGChecker's output JSON (items, claims, labels, metrics); None = output_dir/results.json",
    )
    extractor_name: str | None = Field(None, description="claim-extraction LLM; None = engine.model")
    checker_name: str | None = Field(
        None,
        description="checking LLM, or nli (RefChecker's NLI model), nli:<hub id or dir>, nli:tiny; "
        "None = the extractor",
    )
    metrics: list[str] = Field(
        ["all_metrics"],
        description="all_metrics, overall_metrics, retriever_metrics, generator_metrics or metric names "
        "(comma-separated); only their labels are computed",
    )
    engine: EngineConfig = Field(
        EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024),
        description="the engine of the extractor and LLM checker (their models: *_name, default engine.model)",
    )
    cache: bool = Field(True, description="keep claims and labels in output_dir/label_cache (resumable)")
    stage: StageConfig = Field(
        StageConfig(batch_size=8), description="the evaluation actors (items per batch)"
    )

    @field_validator("metrics", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        select_metrics(value)  # raises naming the unknown one
        return value

    @property
    def extractor(self) -> str:
        """The extraction model."""
        return self.extractor_name or self.engine.model

    @property
    def checker(self) -> str:
        """The checking model (an LLM, or `nli`/`nli:<model>`)."""
        return self.checker_name or self.extractor

    @property
    def nli_model(self) -> str | None:
        """The NLI classifier the checker names, or None for an LLM checker."""
        if self.checker == "nli":
            return "nli"
        return self.checker.removeprefix("nli:") if self.checker.startswith("nli:") else None

    def engine_for(self, model: str) -> EngineConfig:
        return self.engine.model_copy(update={"model": model})

    def checking(self) -> CheckingConfig:
        return CheckingConfig(**{k: getattr(self, k) for k in CheckingConfig.model_fields})

    def results_path(self) -> Path:
        return Path(self.output_path) if self.output_path else Path(self.output_dir) / "results.json"


ROW_SCHEMA = pa.schema([("key", pa.int64()), ("item", pa.string())])


class _Task:
    schema = ROW_SCHEMA

    def __init__(self, cfg: EvalRagConfig, engine: EngineConfig | None):
        self.cfg, self.engine = cfg, engine
        self.metrics = select_metrics(cfg.metrics)
        self._cache: LabelCache | None = None

    def cache(self) -> LabelCache | None:
        if self.cfg.cache and self._cache is None:  # opened once per actor, on its first batch
            self._cache = LabelCache(Path(self.cfg.output_dir) / "label_cache")
        return self._cache

    def _run(self, rows: list[dict], step) -> None:
        items = [json.loads(row["item"]) for row in rows]
        asyncio.run(step(items))
        for row, item in zip(rows, items):
            row["item"] = json.dumps(item, ensure_ascii=False)


class ExtractTask(_Task):
    """Engine task: the claims each item lacks (from the extractor LLM)."""

    def __call__(self, rows: list[dict], engine: Engine | None) -> None:
        ccfg = self.cfg.checking()
        extractor = LLMExtractor(from_engine(engine), self.cfg.extractor, ccfg, self.cache())
        self._run(rows, lambda items: RAGEvaluator(extractor, None, ccfg).extract(items, self.metrics))


class CheckTask(_Task):
    """Engine task: the labels each item lacks, then its per-item metrics (LLM checker or NLI classifier)."""

    _nli: NLIChecker | None = None

    def __call__(self, rows: list[dict], engine: Engine | None) -> None:
        ccfg = self.cfg.checking()
        if engine is None:
            if self._nli is None:
                self._nli = NLIChecker(self.cfg.nli_model, ccfg, self.cache())
            checker = self._nli
        else:
            checker = LLMChecker(from_engine(engine), self.cfg.checker, ccfg, self.cache())
        self._run(rows, lambda items: RAGEvaluator(None, checker, ccfg).check(items, self.metrics))


def check(cfg: EvalRagConfig) -> None:
    """The input and the models exist (tiny and hub names are resolved when loaded)."""
    require_path(cfg.input_path, "input_path")
    require_model(cfg.extractor, "extractor_name")
    if cfg.nli_model is None:
        require_model(cfg.checker, "checker_name")
    elif cfg.nli_model not in ("nli", "tiny"):
        require_model(cfg.nli_model, "checker_name")


def run(cfg: EvalRagConfig) -> Result:
    """Evaluate every valid item on the current Ray cluster; write RAGChecker's JSON and the report."""
    import ray

    check(cfg)
    out = Path(cfg.output_dir)
    metrics = select_metrics(cfg.metrics)
    with Workflow("eval_rag", cfg, out) as wf:
        with wf.phase("read"):
            items, errors = read_items(cfg.input_path, metrics)
        n_in = len(items) + len(errors)
        done: list[dict] = []
        if items:
            with wf.phase("evaluate"):
                for name in {cfg.extractor, cfg.checker}:
                    if name.startswith("tiny:"):
                        resolve_model_path(name)  # build a tiny model once here, not in every actor
                log.info("evaluating %d items: extractor %s, checker %s (%s)", len(items), cfg.extractor,
                         cfg.checker, "joint" if cfg.joint_check else "single")  # fmt: skip
                rows = [
                    {"key": i, "item": json.dumps(item, ensure_ascii=False)} for i, item in enumerate(items)
                ]
                checker_engine = None if cfg.nli_model else cfg.engine_for(cfg.checker)
                tasks = [ExtractTask(cfg, cfg.engine_for(cfg.extractor)), CheckTask(cfg, checker_engine)]
                ds = engine_map(ray.data.from_items(rows), tasks, cfg.stage)
                done = [json.loads(r["item"]) for r in sorted(ds.take_all(), key=lambda r: r["key"])]
        results = [item for item in done if not item.get("error")]
        errors += [{"where": f"query_id={item['query_id']}", "query_id": item["query_id"], "reason": item["error"],
                    "raw": None} for item in done if item.get("error")]  # fmt: skip
        overall = aggregate([item["metrics"] for item in results], metrics)
        with wf.phase("report"):
            path = cfg.results_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps({"results": results, "metrics": overall}, indent=2, ensure_ascii=False)
            )
            out.mkdir(parents=True, exist_ok=True)
            with (out / "errors.jsonl").open("w", encoding="utf-8") as f:
                for error in errors:
                    f.write(json.dumps(error, ensure_ascii=False) + "\n")
            write_report(out, cfg, overall, len(results), errors)
        summary = {"items_in": n_in, "evaluated": len(results), "errors": len(errors), "metrics": overall,
                   "output_path": str(path)}  # fmt: skip
        return wf.finish(
            summary, f"evaluated {len(results)} of {n_in} items ({len(errors)} errors) -> {path}"
        )


def write_report(out: Path, cfg: EvalRagConfig, overall: dict, n: int, errors: list[dict]) -> None:
    """report.md (the metrics as a table) and metrics.png (a bar chart of them); metrics.json too."""
    write_json(out / "metrics.json", overall)
    mode = f"joint, {cfg.joint_check_num} claims per prompt" if cfg.joint_check else "one claim per prompt"
    lines = [
        "# RAGChecker evaluation",
        "",
        f"Input: `{cfg.input_path}` ({n} items evaluated, {len(errors)} errors: see errors.jsonl). "
        + f"Extractor `{cfg.extractor}`, checker `{cfg.checker}` ({mode}).",
        "",
        "Percentages, averaged over items. Lower is better for noise sensitivity and hallucination.",
        "",
        "| group | metric | value |",
        "|---|---|---|",
    ]
    for group, values in overall.items():
        lines += [f"| {group} | {name} | {value:.1f} |" for name, value in values.items()]
    _plot(out / "metrics.png", overall)
    lines += ["", "![metrics](metrics.png)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _plot(path: Path, overall: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(METRIC_GROUPS, ("tab:blue", "tab:green", "tab:orange")))
    names = [m for m in ALL_METRICS if any(m in v for v in overall.values())]
    values = [next(v[m] for v in overall.values() if m in v) for m in names]
    group_of = {m: g for g, ms in METRIC_GROUPS.items() for m in ms}
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.bar(range(len(names)), values, color=[colors[group_of[m]] for m in names])
    ax.set_xticks(range(len(names)), [m.replace("noise_sensitivity_in_", "NS_") for m in names], rotation=35,
                  ha="right")  # fmt: skip
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title("RAGChecker metrics (overall / retriever / generator)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
