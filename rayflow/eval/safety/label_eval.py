"""Label-level evaluation of a safety judge on a labelled JSONL dataset, over Ray Data.

Each input line is `{query, response, label, lang?, id?}` with label safe/unsafe (or 安全/不安全). Lines
are read on the driver so every error names its file and line; a bad line becomes an error record, never a
failed run, and every line ends in `judgements.parquet` or `errors/`. Judging runs in an actor pool, each
actor holding either a local engine (`engine`) or a client of a running judge service (`endpoint`).

Outputs in `output_dir`: judgements.parquet, errors/errors.parquet, metrics.json (overall and per language:
accuracy, P/R/F1 with unsafe positive, parse-failure rate, confusion counts), report.md, confusion.png,
stats.json. Only `run_eval_safety` touches Ray.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from rayflow.config import Config
from rayflow.eval.safety.judge import JudgeConfig, JudgeRequest, JudgeResult, SafetyJudge, Scheme
from rayflow.eval.safety.metrics import label_report, normalize_gold
from rayflow.jsonl import loads_object
from rayflow.llm import EngineConfig, build_engine, resolve_model_path

ERROR_PREVIEW_CHARS = 500
_CJK = re.compile(r"[\u3400-\u9fff]")


class EvalSafetyConfig(Config):
    """Label-level judge evaluation: a labelled JSONL dataset in, metrics and a report out."""

    input: str = Field("examples/safety/labelled.jsonl", description="JSONL file or directory of *.jsonl")
    output_dir: str = Field("outputs/eval_safety", description="where judgements, errors, metrics, report go")
    scheme: Scheme = "safetyj"
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
    batch_size: int = Field(64, ge=1, description="rows per judge call")
    num_judges: int = Field(1, ge=1, description="judge actors (one engine or client each)")
    cpus_per_judge: float = Field(1.0, gt=0)
    gpus_per_judge: float = Field(0.0, ge=0)


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


class EndpointJudge:
    """The judge service as a client: `POST {endpoint}/v1/judge/safety` with `{"items": [...]}`."""

    def __init__(self, endpoint: str, token: str | None, timeout_s: float):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=endpoint.rstrip("/"), headers=headers, timeout=timeout_s)

    def judge(self, requests: list[JudgeRequest]) -> list[JudgeResult]:
        body = {"items": [r.model_dump(exclude_none=True) for r in requests]}
        reply = self.client.post("/v1/judge/safety", json=body)
        if reply.status_code != 200:
            raise RuntimeError(f"judge endpoint answered {reply.status_code}: {reply.text[:500]}")
        return [JudgeResult(**r) for r in reply.json()["results"]]


class JudgeRows:
    """Ray Data batch function: dataset rows in, judgements out (one row each; `error` set on refusal)."""

    def __init__(self, cfg: dict, token: str | None = None):
        self.cfg = EvalSafetyConfig(**cfg)
        if self.cfg.endpoint:
            self.judge = EndpointJudge(self.cfg.endpoint, token, self.cfg.engine.request_timeout_s)
        else:
            engine = build_engine(self.cfg.engine)
            self.judge = SafetyJudge(engine, self.cfg.engine.model, self.cfg.judge)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        requests = [
            JudgeRequest(
                id=row.id,
                lang=row.lang,
                query=row.query,
                response=row.response,
                scheme=self.cfg.scheme,
                mode=self.cfg.mode,
                rules=self.cfg.rules or None,
            )
            for row in batch.itertuples()
        ]
        results = self.judge.judge(requests)
        out = batch.copy()
        out["pred"] = [r.label for r in results]
        out["parse_ok"] = [r.parse_ok for r in results]
        out["categories"] = [json.dumps(r.categories) for r in results]
        out["critique"] = [r.critique for r in results]
        out["raw_output"] = [r.raw_output for r in results]
        out["p_unsafe"] = [r.p_unsafe for r in results]
        out["prompt_version"] = [r.prompt_version for r in results]
        out["error"] = [r.error for r in results]
        return out


def run_eval_safety(cfg: EvalSafetyConfig) -> dict:
    """Judge every valid row on the current Ray cluster, write all outputs, return the stats."""
    import ray

    token = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if cfg.api_key_env and not token:
        raise ValueError(f"api_key_env names {cfg.api_key_env!r}, which is not set")
    rows, errors = read_rows(cfg.input)
    lines_in = len(rows) + len(errors)
    if not cfg.endpoint and cfg.engine.model.startswith("tiny:"):
        resolve_model_path(cfg.engine.model)  # build the tiny model once here, not in every actor
    judged = pd.DataFrame()
    if rows:
        ds = ray.data.from_items(rows).map_batches(
            JudgeRows,
            # The token is read here: Ray workers do not see the driver's environment.
            fn_constructor_kwargs={"cfg": cfg.model_dump(), "token": token},
            batch_size=cfg.batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=cfg.num_judges),
            num_cpus=cfg.cpus_per_judge,
            num_gpus=cfg.gpus_per_judge or None,
        )
        judged = ds.to_pandas().sort_values(["source", "line"], kind="stable").reset_index(drop=True)
        refused = judged[judged["error"].notna()]
        errors += [{"source": r.source, "line": int(r.line), "reason": f"judge refused the row: {r.error}",
                    "raw": json.dumps({"query": r.query, "response": r.response}, ensure_ascii=False)[:ERROR_PREVIEW_CHARS]}
                   for r in refused.itertuples()]  # fmt: skip
        judged = judged[judged["error"].isna()].drop(columns=["error"])
    out = Path(cfg.output_dir)
    (out / "errors").mkdir(parents=True, exist_ok=True)
    judged.to_parquet(out / "judgements.parquet", index=False)
    pd.DataFrame(errors, columns=["source", "line", "reason", "raw"]).to_parquet(
        out / "errors" / "errors.parquet"
    )
    report = label_report(judged.to_dict("records")) if len(judged) else None
    write_report(out, cfg, report, errors)
    return {"rows_in": lines_in, "judged": len(judged), "errors": len(errors)}


def write_report(out: Path, cfg: EvalSafetyConfig, report: dict | None, errors: list[dict]) -> None:
    """metrics.json, report.md and confusion.png (one confusion matrix per language and overall)."""
    from rayflow.runinfo import write_json

    judge_model = cfg.endpoint or cfg.engine.model
    write_json(
        out / "metrics.json",
        {"scheme": cfg.scheme, "mode": cfg.mode, "judge": judge_model, "metrics": report},
    )
    lines = [f"# Safety judge evaluation: {cfg.scheme} ({cfg.mode} mode)", "",
             (f"Judge: `{judge_model}`. Data: `{cfg.input}`. Unsafe is the positive class; unreadable and "
             "controversial verdicts count as unsafe."), ""]  # fmt: skip
    if report is not None:
        lines += [
            "| split | n | accuracy | precision | recall | F1 | parse failures |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in [("overall", report["overall"]), *report["by_lang"].items()]:
            lines.append(f"| {name} | {m['n']} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
                         f"{m['f1']:.3f} | {m['parse_failure_rate']:.1%} |")  # fmt: skip
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
