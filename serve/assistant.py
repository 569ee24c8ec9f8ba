"""The research assistant on Ray Serve: OpenResearcher's flow (`rayflow.rag`) over a live index, composed with the
generic LLM deployment, and its web page. Routes, under the application's prefix (`/assistant`):

    GET  /                the web page (plain HTML/CSS/JS shipped in rayflow/rag/static; relative URLs)
    POST /v1/ingest       {documents: [{doc_id, text, metadata}]}               -> {documents, chunks, total_chunks}
    POST /v1/retrieve     {query, top_k, mode: dense|sparse|hybrid, filters}    -> {results: [{doc_id, chunk_id, ...}]}
    POST /v1/query        {query, history?, top_k?, query_id?, stream?}         -> {query_id, query, response,
                          citations, retrieved_context, passages, trace, ...}; stream=true: server-sent events
                          (steps, the answer token by token as it is written, revisions, citations, done)
    GET  /healthz         200 once the model answers, 503 while it loads

Build with `build_assistant_app(AssistantAppArgs(...))` or the `assistant` application of `serve/config.yaml`.
See docs/assistant.md.
"""

# No `from __future__ import annotations` here: `serve run` turns a YAML `args:` block into the builder's
# pydantic model only when the annotation is the class itself, not a string.
import asyncio
import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from rayflow.config import AppArgs
from rayflow.llm import EngineConfig
from rayflow.rag import AnswerText, AssistantConfig, answer
from rayflow.rag.searcher import IndexSearcher, SearchConfig, read_documents
from rayflow.retrieval import Document, Filters, Mode
from rayflow.serving import HTTPConfig, LLMServer, LLMServerConfig, ReplicaOptions, from_deployment
from rayflow.serving.guards import bad_request, bearer_auth, guarded_app
from rayflow.serving.llm import health_reply, stream_from_deployment

STATIC = resources.files("rayflow.rag") / "static"
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


class AssistantAppArgs(AppArgs):
    """The assistant application: its model, flow, index, limits and replica sizes."""

    llm: LLMServerConfig = LLMServerConfig(
        engine=EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024),
        served_model_name="assistant",
    )
    assistant: AssistantConfig = AssistantConfig()
    search: SearchConfig = SearchConfig()
    corpus: str | None = Field(
        None, description="JSONL documents ({doc_id, text, metadata}) ingested at start; None = start empty"
    )
    max_ingest_documents: int = Field(256, ge=1, description="documents one /v1/ingest request may add")
    http: HTTPConfig = HTTPConfig()
    llm_replica: ReplicaOptions = ReplicaOptions(num_cpus=1.0)
    # One replica: the live index lives in it, so documents ingested through one replica are not in another.
    assistant_replica: ReplicaOptions = ReplicaOptions(num_cpus=0.5)


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: list[Document] = Field(min_length=1)


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    top_k: int = Field(5, ge=1, le=100)
    mode: Mode = "hybrid"
    filters: Filters | None = None


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern="^(user|assistant)$")
    content: str


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    history: list[Turn] = Field(default_factory=list, max_length=20)
    top_k: int | None = Field(None, ge=1, le=20)
    query_id: str | None = None
    stream: bool = False


def _sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
@serve.ingress()
class AssistantServer:
    def __init__(self, llm, args: AssistantAppArgs):
        self.args = args
        self.llm = llm
        self.generate = from_deployment(llm)
        self.stream = stream_from_deployment(llm)
        self.searcher = IndexSearcher(args.search)
        if args.corpus:
            self.searcher.add(read_documents(args.corpus))

    def __serve_build_asgi_app__(self):
        app = guarded_app("rayflow research assistant", self.args.http)
        auth = bearer_auth(self.args.http)

        @app.get("/healthz")
        async def healthz():
            return await health_reply(
                self.llm, {"model": self.args.llm.model_name, "chunks": self.searcher.size()}
            )

        @app.get("/")
        async def page(request: Request):
            # The page's URLs are relative: served at ".../assistant" they would resolve one level too high.
            if not request.url.path.endswith("/"):
                return RedirectResponse(request.url.path + "/")
            return FileResponse(STATIC / "index.html", media_type="text/html")

        @app.get("/static/{name}")
        async def static(name: str):
            if name not in PAGE_FILES:
                raise bad_request(f"no static file {name!r}", "name", status=404)
            return FileResponse(STATIC / name, media_type=PAGE_FILES[name])

        @app.post("/v1/ingest", dependencies=[auth])
        async def ingest(request: IngestRequest):
            if len(request.documents) > self.args.max_ingest_documents:
                raise bad_request(
                    f"documents: {len(request.documents)} documents; one request may add at most "
                    f"{self.args.max_ingest_documents} (index large corpora with jobs/build_index.py)",
                    "documents",
                )
            added = await asyncio.to_thread(self.searcher.add, request.documents)
            return {
                "documents": len(request.documents),
                "chunks": added,
                "total_chunks": self.searcher.size(),
            }

        @app.post("/v1/retrieve", dependencies=[auth])
        async def retrieve(request: RetrieveRequest):
            hits = await asyncio.to_thread(
                self.searcher.search, request.query, request.top_k, request.mode, request.filters
            )
            return {"results": [asdict(h) for h in hits]}

        @app.post("/v1/query", dependencies=[auth])
        async def query(request: QueryRequest):
            kwargs = {
                "history": [t.model_dump() for t in request.history],
                "top_k": request.top_k,
                "query_id": request.query_id,
            }
            if not request.stream:
                result = await answer(
                    request.query, self.generate, self.searcher, self.args.assistant, **kwargs
                )
                return result.model_dump()
            return StreamingResponse(self._stream(request.query, kwargs), media_type="text/event-stream")

        return app

    async def _stream(self, question: str, kwargs: dict):
        """Events: `step` per trace step as it finishes; `answer` pieces of the answer's text as the model writes
        them (streamed from the LLM deployment token by token, before citations and self-critique); `revision`
        with the whole text when citations or a critique change it (it replaces what was sent); `citations`
        (with the passages they point into); then `done` with the whole answer; `error` if the run fails."""
        events: asyncio.Queue = asyncio.Queue()
        run = asyncio.ensure_future(
            answer(
                question,
                self.generate,
                self.searcher,
                self.args.assistant,
                listener=lambda step: events.put_nowait(step.model_dump()),
                writer=events.put_nowait,
                stream=self.stream,
                **kwargs,
            )
        )
        run.add_done_callback(lambda _: events.put_nowait(None))
        sent = ""  # the answer text the `answer` events have carried
        while (event := await events.get()) is not None:
            if not isinstance(event, AnswerText):
                yield _sse("step", event)
            elif event.kind == "delta":
                sent += event.text
                yield _sse("answer", {"delta": event.text})
            elif event.kind == "draft" and event.text.startswith(sent):
                if event.text != sent:  # not streamed (a clarifying question): the rest in one piece
                    yield _sse("answer", {"delta": event.text[len(sent) :]})
                sent = event.text
            else:
                yield _sse("revision", {"text": event.text, "reason": event.reason or "draft"})
        if run.exception() is not None:
            message = f"{type(run.exception()).__name__}: {run.exception()}"
            yield _sse("error", {"error": {"message": message, "type": "server_error", "code": 500}})
            return
        result = run.result()
        yield _sse(
            "citations",
            {
                "citations": [c.model_dump() for c in result.citations],
                "passages": [p.model_dump() for p in result.passages],
            },
        )
        yield _sse("done", result.model_dump())


def build_assistant_app(args: AssistantAppArgs) -> Application:
    if args.corpus is not None:
        # Relative to where the app is built (`serve run` from the repo root), not the replica's directory.
        corpus = Path(args.corpus).resolve()
        if not corpus.is_file():
            raise ValueError(f"corpus: no such file: {corpus}")
        args = args.model_copy(update={"corpus": str(corpus)})
    llm = LLMServer.options(**args.llm_replica.deployment_options()).bind(args.llm)
    return AssistantServer.options(**args.assistant_replica.deployment_options()).bind(llm, args)
