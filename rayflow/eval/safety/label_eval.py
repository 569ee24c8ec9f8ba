"""Label-level evaluation of a safety judge on a labelled JSONL dataset, over Ray Data.

Each input line is `{query, response, label, lang?, id?}` with label safe/unsafe (or 安全/不安全). Lines
are read on the driver so every error names its file and line; a bad line becomes an error record, never a
failed run, and every line ends in `judgements.parquet` or `errors/` (a row whose prompt the engine refuses,
e.g. longer than its context, too). Judging runs on the engine stage (`rayflow.data.engine_stage`), each actor
holding either a local engine (`engine`) or a client of a running judge service (`endpoint`).

Outputs in `output_dir`: judgements.parquet, errors/errors.parquet, metrics.json (overall and per language:
accuracy, P/R/F1 with unsafe positive, parse-failure rate, confusion counts), report.md, confusion.png,
summary.json (row counts), run.json. Where the judge gives p(unsafe) at its verdict token, metrics.json and the
report add PR-AUC and ROC-AUC over the scored rows. Only `run` touches Ray.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from pydantic import Field

from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, engine_map
from rayflow.eval.safety.judge import JudgeConfig, JudgeRequest, JudgeResult, SafetyJudge, Scheme
from rayflow.eval.safety.metrics import label_report, normalize_gold
from rayflow.jsonl import loads_object
from rayflow.llm import Engine, EngineConfig, resolve_model_path
from rayflow.retry import call_with_retries, check_reply
from rayflow.workflow import InputError, Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)

ERROR_PREVIEW_CHARS = 500
_CJK = re.compile(r"[\u3400-\u9fff]")


class EvalSafetyConfig(Config):
    """Label-level judge evaluation: a labelled JSONL dataset in, metrics and a report out."""

    input: str = Field("examples/safety/labelled.jsonl", description="JSONL file or directory of *.jsonl")
    output_dir: str = Field("outputs/eval_safety", description="where judgements, errors, metrics, report go")
    scheme: Scheme = Field(
        "safetyj", description="judge protocol: safetyj, shieldlm, llamaguard or wildguard"
    )
    mode: Literal["label", "critique"] = Field("label", description="label: verdict only (faster)")
    rules: list[str] = Field(default_factory=list, description="custom rules (shieldlm only)")
    judge: JudgeConfig = JudgeConfig()
    engine: EngineConfig = EngineConfig(
        backend="vllm", model="tiny:tiny", dtype="float32", max_model_len=1024
    )
    endpoint: str | None = Field(
        None, description="judge service URL (e.g. http://127.0.0.1:8000); None = engine"
    )
    api_key_env: str | None = Field(None, description="env var with the endpoint's bearer token")
    stage: StageConfig = Field(StageConfig(), description="the judge actors (one engine or client each)")


def parse_row(line: str, where: str) -> tuple[dict | None, str | None]:
    """One JSONL line -> `{id, lang, query, response, label}` or an error reason (which names the field)."""
    obj, error = loads_object(line)
    if obj is None:
        return None, error
    for name in ("query", "response"):
        if not isinstance(obj.get(name), str):
            return None, f"field {name!r} must be a string" + (" (missing)" if name not in obj else "")
    if not obj["query"].strip():
        return None, "field 'query' is empty"
    try:
        label = normalize_gold(obj.get("label"))
    except ValueError as err:
        return None, f"field 'label': {err}"
    lang = obj.get("lang") or ("zh" if _CJK.search(obj["query"] + obj["response"]) else "en")
    if lang not in ("en", "zh"):
        return None, f"field 'lang' must be en or zh, got {lang!r}"
    row_id = str(obj["id"]) if obj.get("id") is not None else where
    return {
        "id": row_id,
        "lang": lang,
        "query": obj["query"],
        "response": obj["response"],
        "label": label,
    }, None


def read_rows(path: str) -> tuple[list[dict], list[dict]]:
    """All rows and error records of a file or directory of `*.jsonl`, in file and line order."""
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"input {path!r} does not exist")
    files = sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
    rows, errors = [], []
    for file in files:
        with file.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{file.name}:{number}"
                row, reason = parse_row(line, where)
                if row is None:
                    errors.append({"source": str(file), "line": number, "reason": reason,
                                   "raw": line[:ERROR_PREVIEW_CHARS]})  # fmt: skip
                else:
                    rows.append({**row, "source": str(file), "line": number})
    return rows, errors


JUDGED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("lang", pa.string()),
        ("query", pa.string()),
        ("response", pa.string()),
        ("label", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("pred", pa.string()),
        ("parse_ok", pa.bool_()),
        ("categories", pa.string()),  # JSON list
        ("critique", pa.string()),
        ("raw_output", pa.string()),
        ("p_unsafe", pa.float64()),
        ("truncated", pa.bool_()),
        ("prompt_version", pa.string()),
        ("error", pa.string()),
    ]
)


class JudgeTask:
    """Engine task: dataset rows in, one judgement each (`error` set when the engine refused the row's prompt).

    With `endpoint` set it needs no engine and asks the judge service instead (`POST /v1/judge/safety`)."""

    schema = JUDGED_SCHEMA

    def __init__(self, cfg: EvalSafetyConfig, token: str | None = None):
        self.cfg = cfg
        self.engine = None if cfg.endpoint else cfg.engine
        self.token = token  # read on the driver: Ray workers do not see its environment
        self._client = None

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None:
        requests = [
            JudgeRequest(id=row["id"], lang=row["lang"], query=row["query"], response=row["response"],
                         scheme=self.cfg.scheme, mode=self.cfg.mode, rules=self.cfg.rules or None)
            for row in rows
        ]  # fmt: skip
        if engine is None:
            results = self._ask_endpoint(requests)
        else:
            results = SafetyJudge(engine, self.cfg.engine.model, self.cfg.judge).judge(requests)
        for row, r in zip(rows, results):
            row.update(pred=r.label, parse_ok=r.parse_ok, categories=json.dumps(r.categories),
                       critique=r.critique, raw_output=r.raw_output, p_unsafe=r.p_unsafe,
                       truncated=r.truncated, prompt_version=r.prompt_version, error=r.error)  # fmt: skip

    def _ask_endpoint(self, requests: list[JudgeRequest]) -> list[JudgeResult]:
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._client = httpx.Client(
                base_url=self.cfg.endpoint.rstrip("/"),
                headers=headers,
                timeout=self.cfg.engine.request_timeout_s,
            )
        body = {"items": [r.model_dump(exclude_none=True) for r in requests]}
        # A restarting replica or a dropped connection costs retries, not the Ray Data job.
        reply = call_with_retries(
            lambda: check_reply(self._client.post("/v1/judge/safety", json=body)),
            f"judge endpoint {self.cfg.endpoint}",
        )
        if reply.status_code != 200:
            raise RuntimeError(f"judge endpoint answered {reply.status_code}: {reply.text[:500]}")
        return [JudgeResult(**r) for r in reply.json()["results"]]


def check(cfg: EvalSafetyConfig) -> None:
    """The input, the judge model (unless an endpoint judges) and the endpoint's token exist."""
    require_path(cfg.input, "input")
    if not cfg.endpoint:
        require_model(cfg.engine.model, "engine.model")
    if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
        raise InputError(f"api_key_env: {cfg.api_key_env!r} is not set")


def run(cfg: EvalSafetyConfig) -> Result:
    """Judge every valid row on the current Ray cluster and write judgements.parquet, errors/errors.parquet,
    metrics.json, report.md, confusion.png, summary.json (row counts) and run.json to `cfg.output_dir`."""
    import ray

    check(cfg)
    token = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    out = Path(cfg.output_dir)
    with Workflow("eval_safety", cfg, out) as wf:
        with wf.phase("read"):
            rows, errors = read_rows(cfg.input)
            lines_in = len(rows) + len(errors)
        judged = pd.DataFrame(columns=JUDGED_SCHEMA.names)
        if rows:
            with wf.phase("judge"):
                log.info("judging %d rows with %s (%s, %s mode)", len(rows), cfg.endpoint or cfg.engine.model,
                         cfg.scheme, cfg.mode)  # fmt: skip
                if not cfg.endpoint and cfg.engine.model.startswith("tiny:"):
                    resolve_model_path(cfg.engine.model)  # build the tiny model once here, not in every actor
                ds = engine_map(ray.data.from_items(rows), [JudgeTask(cfg, token)], cfg.stage)
                judged = ds.to_pandas().sort_values(["source", "line"], kind="stable").reset_index(drop=True)
            refused = judged[judged["error"].notna()]
            errors += [{"source": r.source, "line": int(r.line), "reason": f"judge refused the row: {r.error}",
                        "raw": json.dumps({"query": r.query, "response": r.response}, ensure_ascii=False)[:ERROR_PREVIEW_CHARS]}
                       for r in refused.itertuples()]  # fmt: skip
            judged = judged[judged["error"].isna()]
        judged = judged.drop(columns=["error"])
        with wf.phase("report"):
            (out / "errors").mkdir(parents=True, exist_ok=True)
            judged.to_parquet(out / "judgements.parquet", index=False)
            pd.DataFrame(errors, columns=["source", "line", "reason", "raw"]).to_parquet(
                out / "errors" / "errors.parquet"
            )
            report = label_report(judged.to_dict("records")) if len(judged) else None
            write_report(out, cfg, report, errors)
        summary = {"rows_in": lines_in, "judged": len(judged), "errors": len(errors)}
        return wf.finish(
            summary,
            f"judged {len(judged)} of {lines_in} rows ({len(errors)} errors) -> {out.resolve()}/report.md",
        )


def write_report(out: Path, cfg: EvalSafetyConfig, report: dict | None, errors: list[dict]) -> None:
    """metrics.json, report.md and confusion.png (one confusion matrix per language and overall)."""
    from rayflow.runinfo import write_json

    judge_model = cfg.endpoint or cfg.engine.model
    settings = {"preset": cfg.judge.preset, "native_format": cfg.judge.setting("native_format"),
                "parsing": cfg.judge.setting("parsing")}  # fmt: skip
    write_json(
        out / "metrics.json",
        {"scheme": cfg.scheme, "mode": cfg.mode, "judge": judge_model, **settings, "metrics": report},
    )
    lines = [f"# Safety judge evaluation: {cfg.scheme} ({cfg.mode} mode)", "",
             (f"Judge: `{judge_model}`. Data: `{cfg.input}`. Unsafe is the positive class; unreadable and "
             "controversial verdicts count as unsafe. Prompts and parsing: "
             f"`{cfg.judge.preset}` preset (native prompts: {cfg.judge.setting('native_format')}, parsing: "
             f"{cfg.judge.setting('parsing')}). PR-AUC and ROC-AUC rank rows by p(unsafe) at the verdict "
             "token, over the rows that have one (scored)."), ""]  # fmt: skip
    if report is not None:
        lines += [
            "| split | n | accuracy | precision | recall | F1 | parse failures | truncated | scored | PR-AUC | ROC-AUC |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in [("overall", report["overall"]), *report["by_lang"].items()]:
            aucs = " | ".join("n/a" if m[k] is None else f"{m[k]:.3f}" for k in ("pr_auc", "roc_auc"))
            lines.append(f"| {name} | {m['n']} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                         f"{m['f1']:.3f} | {m['parse_failure_rate']:.1%} | {m['truncated']} | {m['scored']} | "
                         f"{aucs} |")  # fmt: skip
        _plot_confusion(out / "confusion.png", report)
        lines += ["", "![confusion matrices](confusion.png)"]
    lines += ["", f"{len(errors)} rows could not be judged (see errors/errors.parquet)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _plot_confusion(path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = [("overall", report["overall"]), *report["by_lang"].items()]
    fig, axes = plt.subplots(1, len(splits), figsize=(3.2 * len(splits), 3.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], splits):
        grid = [[m["tn"], m["fp"]], [m["fn"], m["tp"]]]
        ax.imshow(grid, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, grid[i][j], ha="center", va="center")
        ax.set_xticks([0, 1], ["pred safe", "pred unsafe"])
        ax.set_yticks([0, 1], ["gold safe", "gold unsafe"])
        ax.set_title(f"{name} (acc {m['accuracy']:.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
