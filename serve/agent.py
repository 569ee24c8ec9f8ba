"""TestAgent on Ray Serve: Benchmark+ from documents or a static QA set, and multi-turn sessions against any
OpenAI-compatible target, steered by the learned question-type policy. Routes, under the application's prefix
(`/agent` in serve/config.yaml):

    POST /v1/agent/benchmarks              {documents: [{doc_id, text, metadata}], topics?} | {qa: [{question,
                                           answer, id?, topic?}]}                  -> {benchmark_id, items, dropped}
    POST /v1/agent/sessions                {target: {base_url, model}, benchmark_id | items, item_ids?, turns,
                                           policy: learned|random|fixed, seed}     -> {session_id}
    POST /v1/agent/sessions/{id}/run       202: runs (or resumes) it in the background; sessions outlast requests
    GET  /v1/agent/sessions/{id}           status, progress, transcript, scores
    GET  /v1/agent/sessions/{id}/report    the target's Markdown report for this session
    GET  /healthz                          200 once the agent model answers, 503 while it loads

The examiner and grader are the application's own LLM deployment; sessions and benchmarks live in `store`
(SQLite by default, any SQLAlchemy URL), turn by turn, so a replica that is replaced loses at most the turn in
flight: its sessions show `interrupted` and POST .../run resumes them. See docs/agent.md.
"""

# No `from __future__ import annotations` here: `serve run` turns a YAML `args:` block into the builder's
# pydantic model only when the annotation is the class itself, not a string.
import asyncio
import logging
import threading
from pathlib import Path
from typing import Literal

from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application

from rayflow.agent import (
    BenchmarkConfig,
    Item,
    SessionConfig,
    SessionStore,
    make_policy,
    run_session,
    session_spec,
)
from rayflow.agent.benchmark import build_items, items_from_records, topics_of
from rayflow.agent.report import target_report
from rayflow.agent.session import threaded
from rayflow.config import AppArgs
from rayflow.llm import EngineConfig, build_engine
from rayflow.retrieval import Document, Embedder, IndexConfig, Retriever
from rayflow.serving import HTTPConfig, LLMServer, LLMServerConfig, ReplicaOptions, from_deployment
from rayflow.serving.guards import bad_request, bearer_auth, check_count, guarded_app
from rayflow.serving.llm import health_reply

log = logging.getLogger(__name__)


class AgentAppArgs(AppArgs):
    """The agent application: its model (examiner and grader), benchmark building, sessions, limits."""

    llm: LLMServerConfig = LLMServerConfig(
        engine=EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024),
        served_model_name="agent",
    )
    build: BenchmarkConfig = BenchmarkConfig()
    index: IndexConfig = IndexConfig()
    session: SessionConfig = SessionConfig()
    store: str = Field(
        "sqlite:///outputs/agent/sessions.db", description="SQLAlchemy URL of sessions and benchmarks"
    )
    policy_path: str = Field("examples/agent/policy.json", description="the learned policy")
    max_turns: int = Field(20, ge=1, description="turns per item one session may ask for")
    max_items: int = Field(32, ge=1, description="items in one session")
    max_documents: int = Field(64, ge=1, description="documents one benchmark request may send")
    max_running: int = Field(4, ge=1, description="sessions running at once; more get 429")
    target_url_prefixes: list[str] = Field(
        [], description="base URLs a target may have (e.g. http://127.0.0.1:8000/); empty = any"
    )
    http: HTTPConfig = HTTPConfig()
    llm_replica: ReplicaOptions = ReplicaOptions(num_cpus=1.0)
    # One replica: sessions running in the background live in it.
    agent_replica: ReplicaOptions = ReplicaOptions(num_cpus=0.5)


class QARecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    id: str | None = None
    topic: str | None = None


class BenchmarkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: list[Document] | None = Field(None, min_length=1)
    topics: list[str] | None = Field(None, min_length=1, description="default: one per document")
    qa: list[QARecord] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.documents is None) == (self.qa is None):
            raise ValueError("documents: give documents or qa, not both or neither")
        return self


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(pattern=r"^https?://", description="the target's OpenAI-compatible /v1 URL")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(None, description="env var of the replica holding the target's key")


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: TargetSpec
    benchmark_id: str | None = None
    items: list[Item] | None = Field(None, min_length=1)
    item_ids: list[str] | None = Field(None, min_length=1, description="a subset of the benchmark's items")
    turns: int = Field(4, ge=1)
    policy: Literal["learned", "random", "fixed"] = "learned"
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.benchmark_id is None) == (self.items is None):
            raise ValueError("items: give benchmark_id or items, not both or neither")
        return self


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class AgentServer:
    def __init__(self, llm, args: AgentAppArgs):
        self.args = args
        self.llm = llm
        self.generate = from_deployment(llm)
        self.store = SessionStore(args.store)
        self.embedder: Embedder | None = None  # loaded by the first benchmark built from documents
        self._embedder_lock = threading.Lock()
        self.running: dict[str, asyncio.Task] = {}
        for sid in self.store.ids("running"):  # a replica before this one stopped mid-session
            self.store.set_status(sid, "interrupted", error="the service restarted; POST .../run resumes it")

    def __serve_build_asgi_app__(self):
        app = guarded_app("rayflow TestAgent", self.args.http)
        auth = bearer_auth(self.args.http)

        @app.get("/healthz")
        async def healthz():
            return await health_reply(
                self.llm, {"model": self.args.llm.model_name, "running": len(self.running)}
            )

        @app.post("/v1/agent/benchmarks", dependencies=[auth])
        async def benchmarks(request: BenchmarkRequest):
            if request.qa is not None:
                check_count(request.qa, "qa", self.args.http.max_items)
                items = items_from_records([r.model_dump() for r in request.qa], "request")
                dropped = []
            else:
                check_count(request.documents, "documents", self.args.max_documents)
                items, dropped = await self._build(request.documents, request.topics)
            info = {"source": "qa" if request.qa is not None else "documents", "dropped": dropped}
            bid = self.store.add_benchmark([i.model_dump() for i in items], info)
            return {"benchmark_id": bid, "items": [i.model_dump() for i in items], "dropped": dropped}

        @app.post("/v1/agent/sessions", dependencies=[auth])
        async def create(request: SessionRequest):
            prefixes = self.args.target_url_prefixes
            if prefixes and not any(request.target.base_url.startswith(p) for p in prefixes):
                raise bad_request(
                    "target.base_url: not an allowed target (target_url_prefixes)", "target.base_url"
                )
            if request.turns > self.args.max_turns:
                raise bad_request(f"turns: {request.turns}; the limit is {self.args.max_turns}", "turns")
            if request.policy == "learned" and not Path(self.args.policy_path).is_file():
                raise bad_request("policy: no learned policy is installed (policy_path)", "policy")
            items = request.items
            if items is None:
                stored = self.store.benchmark(request.benchmark_id)
                if stored is None:
                    raise bad_request(
                        f"benchmark_id: no benchmark {request.benchmark_id!r}", "benchmark_id", 404
                    )
                items = [Item.model_validate(i) for i in stored]
            if request.item_ids is not None:
                known = {i.id: i for i in items}
                missing = [i for i in request.item_ids if i not in known]
                if missing:
                    raise bad_request(f"item_ids: not in the benchmark: {missing[:5]}", "item_ids")
                items = [known[i] for i in request.item_ids]
            check_count(items, "items", self.args.max_items)
            spec = session_spec(
                request.target.model_dump(), items, request.turns, request.policy, request.seed
            )
            return {"session_id": self.store.create(spec)}

        @app.post("/v1/agent/sessions/{session_id}/run", dependencies=[auth])
        async def run(session_id: str):
            session = self._session(session_id)
            if session["status"] == "done":
                return {"session_id": session_id, "status": "done"}
            if session_id not in self.running:
                if len(self.running) >= self.args.max_running:
                    raise bad_request(f"{len(self.running)} sessions are running; the limit is "
                                      f"{self.args.max_running}: try again later", None, 429)  # fmt: skip
                self.store.set_status(session_id, "running")
                task = asyncio.create_task(self._run(session_id, session["spec"]))
                self.running[session_id] = task
                task.add_done_callback(lambda _: self.running.pop(session_id, None))
            return JSONResponse({"session_id": session_id, "status": "running"}, status_code=202)

        @app.get("/v1/agent/sessions/{session_id}", dependencies=[auth])
        async def get(session_id: str):
            session = self._session(session_id)
            turns = self.store.turns(session_id)
            spec = session["spec"]
            return {"session_id": session_id, "status": session["status"], "error": session["error"],
                    "target": spec["target"], "policy": spec["policy"], "seed": spec["seed"],
                    "progress": {"turns_done": len(turns), "turns_max": spec["turns"] * len(spec["items"])},
                    "transcript": turns, "scores": session["scores"]}  # fmt: skip

        @app.get("/v1/agent/sessions/{session_id}/report", dependencies=[auth])
        async def report(session_id: str):
            session = self._session(session_id)
            turns = self.store.turns(session_id)
            name = session["spec"]["target"]["model"]
            return PlainTextResponse(target_report(name, [{**session, "turns": turns}]) + "\n",
                                     media_type="text/markdown")  # fmt: skip

        return app

    def _session(self, session_id: str) -> dict:
        session = self.store.get(session_id)
        if session is None:
            raise bad_request(f"session_id: no session {session_id!r}", "session_id", 404)
        return session

    async def _build(self, documents: list[Document], topics: list[str] | None):
        def index():
            with self._embedder_lock:
                if self.embedder is None:
                    self.embedder = Embedder(self.args.index.embedder)
            retriever = Retriever.empty(self.args.index, embedder=self.embedder)
            retriever.add_documents(documents)
            return retriever

        retriever = await asyncio.to_thread(index)
        return await build_items(retriever, topics or topics_of(documents), self.generate, self.args.build)

    async def _run(self, session_id: str, spec: dict) -> None:
        """Run the session to its end; whatever stops it is recorded on it, never raised into the replica."""
        target = spec["target"]
        try:
            engine = build_engine(EngineConfig(backend="openai", model=target["model"], base_url=target["base_url"],
                                               api_key_env=target["api_key_env"] or "OPENAI_API_KEY"))  # fmt: skip
            policy = make_policy(spec["policy"], self.args.policy_path)
        except Exception as err:  # noqa: BLE001 - a bad target or policy file fails this session alone
            self.store.set_status(session_id, "error", error=f"{type(err).__name__}: {err}")
            return
        try:
            await run_session(
                self.store, session_id, threaded(engine), self.generate, policy, self.args.session
            )
        finally:
            engine.close()


def build_agent_app(args: AgentAppArgs) -> Application:
    # Relative paths are relative to where the app is built (`serve run` from the repo root), not the replica's.
    store = args.store
    if (
        store.startswith("sqlite:///")
        and not store.startswith("sqlite:////")
        and store != "sqlite:///:memory:"
    ):
        store = f"sqlite:///{Path(store.removeprefix('sqlite:///')).resolve()}"
    args = args.model_copy(update={"store": store, "policy_path": str(Path(args.policy_path).resolve())})
    llm = LLMServer.options(**args.llm_replica.deployment_options()).bind(args.llm)
    return AgentServer.options(**args.agent_replica.deployment_options()).bind(llm, args)
