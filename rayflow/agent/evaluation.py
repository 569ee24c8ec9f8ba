"""agent_eval: TestAgent over many targets x items on Ray, one comparative report.

The benchmark is read (`benchmark`), built from documents (`documents`, through `rayflow.retrieval` and
`build`) or converted from a static QA set (`qa`), and written to output_dir/benchmark.jsonl. Each (target,
item) pair is one session, created in the session store with an id fixed by its spec, so a rerun finds the
sessions it already finished and resumes those that stopped. The sessions run on the one engine stage: each
actor holds the agent model (examiner and grader) and builds a target's engine on first use (an `openai`
backend for any OpenAI-compatible endpoint, or a local model).

Outputs in output_dir: benchmark.jsonl, report.md (comparative), targets.png, reports/<target>.md and .png,
scores.json, errors.jsonl (sessions that stopped), summary.json, run.json; the sessions in `store`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from rayflow.agent.benchmark import (
    BenchmarkConfig,
    Item,
    build_items,
    items_from_qa,
    read_items,
    topics_of,
    write_items,
)
from rayflow.agent.policy import make_policy
from rayflow.agent.report import comparative_report, overall_scores, plot_target, plot_targets, target_report
from rayflow.agent.session import SessionConfig, run_session, session_spec, threaded
from rayflow.agent.store import SessionStore
from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, engine_map
from rayflow.llm import Engine, EngineConfig, build_engine, resolve_model_path
from rayflow.retrieval import IndexConfig
from rayflow.workflow import InputError, Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)


class TargetConfig(Config):
    """One model under test: a name for the report and how to reach it."""

    name: str = Field(min_length=1, description="the target's name in reports")
    engine: EngineConfig = Field(description="backend openai + base_url for an endpoint, or a local model")


class AgentEvalConfig(Config):
    """Sessions of every target on every Benchmark+ item, and a comparative report."""

    output_dir: str = Field("outputs/agent_eval", description="benchmark, reports, scores, run.json")
    benchmark: str | None = Field(None, description="Benchmark+ JSONL to use as is")
    documents: str | None = Field(
        None, description="JSONL documents ({doc_id, text, metadata}) to build Benchmark+ from"
    )
    qa: str | None = Field(
        None, description="static QA JSONL ({question, answer}) to convert into Benchmark+"
    )
    build: BenchmarkConfig = BenchmarkConfig()
    index: IndexConfig = Field(IndexConfig(), description="the live index the documents are searched in")
    max_items: int | None = Field(None, ge=1, description="use the first n items; None = all")
    targets: list[TargetConfig] = Field(
        [TargetConfig(name="tiny-small", engine=EngineConfig(backend="hf", model="tiny:small", dtype="float32", max_model_len=1024))],
        description="the models under test",
    )  # fmt: skip
    agent: EngineConfig = Field(
        EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024),
        description="the examiner and grader model",
    )
    turns: int = Field(4, ge=1, le=50, description="turns per item (the first asks the seed question)")
    policy: str = Field("learned", pattern="^(learned|random|fixed)$", description="learned, random or fixed")
    policy_path: str = Field(
        "examples/agent/policy.json", description="the learned policy (jobs/train_agent_policy.py)"
    )
    seed: int = Field(0, ge=0, description="seed of the policy's and the target's random choices")
    session: SessionConfig = SessionConfig()
    store: str | None = Field(
        None, description="SQLAlchemy URL of the session store; None = output_dir/sessions.db"
    )
    stage: StageConfig = Field(
        StageConfig(batch_size=1), description="the session actors (sessions per batch)"
    )

    @model_validator(mode="after")
    def _named_targets(self) -> AgentEvalConfig:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names) or not names:
            raise ValueError("targets: give at least one target, each with its own name")
        return self

    def store_url(self) -> str:
        return self.store or f"sqlite:///{(Path(self.output_dir) / 'sessions.db').resolve()}"


def check(cfg: AgentEvalConfig) -> None:
    """One benchmark source is given; inputs, the policy file and local models exist."""
    given = [k for k in ("benchmark", "documents", "qa") if getattr(cfg, k)]
    if len(given) != 1:
        raise InputError(
            f"benchmark: give exactly one of benchmark, documents, qa (given: {', '.join(given) or 'none'})"
        )
    for key in ("benchmark", "documents", "qa"):
        require_path(getattr(cfg, key), key)
    if cfg.policy == "learned":
        require_path(cfg.policy_path, "policy_path")
    require_model(cfg.agent.model, "agent.model")
    for i, t in enumerate(cfg.targets):
        if t.engine.backend != "openai":
            require_model(t.engine.model, f"targets[{i}].engine.model")


def load_benchmark(cfg: AgentEvalConfig) -> tuple[list[Item], list[dict]]:
    """The items (and those dropped while building), from whichever source the config names."""
    if cfg.benchmark:
        items, dropped = read_items(cfg.benchmark), []
    elif cfg.qa:
        items, dropped = items_from_qa(cfg.qa), []
    else:
        from rayflow.rag.searcher import read_documents
        from rayflow.retrieval import Retriever

        documents = read_documents(cfg.documents)
        retriever = Retriever.empty(cfg.index)
        retriever.add_documents(documents)
        llm = "llm" in (cfg.build.strategy, cfg.build.drafter, cfg.build.verifier)
        engine = build_engine(cfg.agent) if llm else None
        generate = threaded(engine) if engine else None
        try:
            items, dropped = asyncio.run(build_items(retriever, topics_of(documents), generate, cfg.build,
                                                     source={"documents": cfg.documents}))  # fmt: skip
        finally:
            if engine is not None:
                engine.close()
    return items[: cfg.max_items] if cfg.max_items else items, dropped


def session_id(spec: dict) -> str:
    """A session's id: a hash of its spec (target, items, turns, policy, seed), so a rerun finds it."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


class SessionTask:
    """Engine task: run (or resume) each row's session; the agent model is the stage's engine, a target's
    engine is built on its first row in this actor and kept."""

    schema = pa.schema([("session_id", pa.string()), ("target", pa.string()), ("status", pa.string()),
                        ("error", pa.string())])  # fmt: skip

    def __init__(self, cfg: AgentEvalConfig):
        self.cfg = cfg
        self.engine = cfg.agent
        self._targets: dict[str, Engine] = {}

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None:
        store = SessionStore(self.cfg.store_url())
        policy = make_policy(self.cfg.policy, self.cfg.policy_path)
        try:
            for row in rows:
                target = next(t for t in self.cfg.targets if t.name == row["target"])
                if target.name not in self._targets:
                    self._targets[target.name] = build_engine(target.engine)
                done = asyncio.run(run_session(store, row["session_id"], threaded(self._targets[target.name]),
                                               threaded(engine), policy, self.cfg.session))  # fmt: skip
                row["status"], row["error"] = done["status"], done["error"]
        finally:
            store.close()


def run(cfg: AgentEvalConfig) -> Result:
    """Run every (target, item) session on the current Ray cluster and write the reports."""
    import ray

    check(cfg)
    # Actors may run elsewhere than the driver's directory: they get the policy file by absolute path.
    cfg = cfg.model_copy(update={"policy_path": str(Path(cfg.policy_path).resolve())})
    out = Path(cfg.output_dir)
    with Workflow("agent_eval", cfg, out) as wf:
        with wf.phase("benchmark"):
            items, dropped = load_benchmark(cfg)
            if not items:
                raise InputError("benchmark: no item to run (every one was dropped or the file is empty)")
            write_items(out / "benchmark.jsonl", items)
        store = SessionStore(cfg.store_url())
        rows = []
        for t in cfg.targets:
            for item in items:
                target = t.engine.model_dump(include={"backend", "model", "base_url", "server_model"})
                spec = session_spec({"name": t.name, **target}, [item], cfg.turns, cfg.policy, cfg.seed)
                sid = session_id(spec)
                if store.get(sid) is None:
                    store.create(spec, sid)
                rows.append(
                    {"session_id": sid, "target": t.name, "status": store.get(sid)["status"], "error": None}
                )
        todo = [r for r in rows if r["status"] != "done"]
        with wf.phase("sessions"):
            for name in {
                cfg.agent.model,
                *(t.engine.model for t in cfg.targets if t.engine.backend != "openai"),
            }:
                if name.startswith("tiny:"):
                    resolve_model_path(name)  # build a tiny model once here, not in every actor
            log.info("%d sessions (%d already done): %d targets x %d items", len(rows), len(rows) - len(todo),
                     len(cfg.targets), len(items))  # fmt: skip
            if todo:
                engine_map(ray.data.from_items(todo), [SessionTask(cfg)], cfg.stage).materialize()
        with wf.phase("report"):
            by_target: dict[str, list[dict]] = {t.name: [] for t in cfg.targets}
            errors = []
            for r in rows:
                s = store.get(r["session_id"])
                if s["status"] != "done":
                    errors.append({"session_id": r["session_id"], "target": r["target"], "status": s["status"],
                                   "error": s["error"]})  # fmt: skip
                by_target[r["target"]].append({**s, "turns": store.turns(r["session_id"])})
            store.close()
            (out / "reports").mkdir(parents=True, exist_ok=True)
            for i, (name, sessions) in enumerate(by_target.items()):
                stem = f"target-{i:02d}"
                plot_target(name, sessions, out / "reports" / f"{stem}.png")
                (out / "reports" / f"{stem}.md").write_text(
                    target_report(name, sessions, plot=f"{stem}.png") + "\n"
                )
            plot_targets(by_target, out / "targets.png")
            (out / "report.md").write_text(comparative_report(by_target, plot="targets.png"))

            scores = {
                name: {k: v for k, v in overall_scores(s).items() if k != "items"}
                for name, s in by_target.items()
            }
            (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
            (out / "errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))
        summary = {"items": len(items), "dropped_items": len(dropped), "targets": len(cfg.targets),
                   "sessions": len(rows), "resumed_or_run": len(todo), "failed_sessions": len(errors),
                   "scores": scores}  # fmt: skip
        best = max(scores, key=lambda n: scores[n]["overall"] or 0)
        return wf.finish(summary, f"{len(rows)} sessions ({len(errors)} stopped) over {len(items)} items; "
                                  f"best overall: {best} ({scores[best]['overall'] or 0:.3f})")  # fmt: skip
