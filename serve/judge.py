"""The safety judge service: four judge protocols and critique meta-evaluation behind one HTTP endpoint,
composed over the generic LLM deployment (vLLM by default).

    POST /v1/judge/safety      {id, lang, query, response, scheme, mode, rules?}  or  {"items": [...]}
    POST /v1/judge/meta-eval   {query, response, lang, hypothesis_critique, reference_aius}  or  {"items": [...]}
    GET  /healthz              200 once the judge model answers, 503 while it loads
    POST /v1/chat/completions, /v1/completions; GET /v1/models   (the judge model, OpenAI-compatible)

Build with `build_judge_app(JudgeAppArgs(...))`, `serve run serve/config.yaml`, or
`serve run serve.judge:build_judge_app`. Limits (token, body size, `items` per request, messages, stop
strings) come from `http`, reference AIUs per meta-eval item from `max_reference_aius`. See docs/safety.md
and docs/serving.md.
"""

# No `from __future__ import annotations` here: `serve run` turns a YAML `args:` block into the builder's
# pydantic model only when the annotation is the class itself, not a string.
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application

from rayflow.config import AppArgs
from rayflow.eval.safety.judge import JudgeConfig, JudgeRequest, JudgeResult, judge
from rayflow.eval.safety.metaeval import (
    PROMPT_VERSION,
    MetaEvalConfig,
    MetaEvalItem,
    aggregate,
    meta_evaluate,
)
from rayflow.serving import HTTPConfig, LLMServer, LLMServerConfig, ReplicaOptions, from_deployment
from rayflow.serving.guards import bad_request, bearer_auth, check_count, guarded_app
from rayflow.serving.llm import DeploymentBackend, health_reply
from rayflow.serving.openai_api import add_openai_routes


class JudgeAppArgs(AppArgs):
    """The judge application: its model, decoding, limits and replica sizes."""

    llm: LLMServerConfig = LLMServerConfig()
    judge: JudgeConfig = JudgeConfig()
    metaeval: MetaEvalConfig = MetaEvalConfig()
    http: HTTPConfig = HTTPConfig()
    judge_model: str | None = Field(
        None, description="name reported as judge_model; None = llm's served name"
    )
    max_reference_aius: int = Field(
        64, ge=1, description="reference_aius per meta-eval item (one verdict each)"
    )
    evidence_db: str | None = Field(
        None, description="SQLAlchemy URL of the contamination evidence behind /v1/contamination; None = 404"
    )
    max_batch_size: int = Field(
        64, ge=1, description="/v1/judge/safety requests judged together (one LLM call); 1 = one at a time"
    )
    batch_wait_timeout_s: float = Field(
        0.05, ge=0, description="longest wait for more requests to join a batch (adds up to this at low load)"
    )
    llm_replica: ReplicaOptions = ReplicaOptions(num_cpus=1.0)
    judge_replica: ReplicaOptions = ReplicaOptions(num_cpus=0.1)


class JudgeBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[JudgeRequest] = Field(min_length=1)


class MetaEvalBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[MetaEvalItem] = Field(min_length=1)


def _validate(single: type[BaseModel], batch: type[BaseModel], body: dict, max_items: int):
    """A body is one item or `{"items": [...]}` of at most `max_items`; errors are located under `body` like
    FastAPI's own."""
    model = batch if isinstance(body, dict) and "items" in body else single
    if model is batch and isinstance(body["items"], list):
        check_count(body["items"], "items", max_items)
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in err.errors(include_url=False, include_context=False)]
        ) from None


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class SafetyJudgeServer:
    def __init__(self, llm, args: JudgeAppArgs):
        self.args = args
        self.model_name = args.judge_model or args.llm.model_name
        self.llm = llm
        self.generate = from_deployment(llm)
        self.set_batching(args.max_batch_size, args.batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.05)
    async def _judge(self, batches: list[list[JudgeRequest]]) -> list[list[JudgeResult] | Exception]:
        """Judge the items of concurrent requests together: one `judge` call, so their prompts reach the LLM
        deployment in one call and share engine batches. Should it raise, each request is judged alone, so
        the failure reaches only the request that causes it."""
        flat = [r for batch in batches for r in batch]
        try:
            results = await judge(flat, self.generate, self.args.judge, self.model_name)
        except Exception:
            if len(batches) == 1:
                raise
            return [await self._judge_alone(batch) for batch in batches]
        out, at = [], 0
        for batch in batches:
            out.append(results[at : at + len(batch)])
            at += len(batch)
        return out

    async def _judge_alone(self, batch: list[JudgeRequest]) -> list[JudgeResult] | Exception:
        try:
            return await judge(batch, self.generate, self.args.judge, self.model_name)
        except Exception as err:  # noqa: BLE001 - handed to this request alone, which raises it
            return err

    async def judge_requests(self, requests: list[JudgeRequest]) -> list[JudgeResult]:
        """Judge one HTTP request's items, batched with concurrent requests'."""
        if self.max_batch_size == 1:  # each request alone, without the batch queue's one-at-a-time turn
            return await judge(requests, self.generate, self.args.judge, self.model_name)
        out = await self._judge(requests)
        if isinstance(out, Exception):
            raise out
        return out

    def set_batching(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """Change request batching on the live replica (max_batch_size=1: each request judged alone)."""
        self.max_batch_size = max_batch_size
        self._judge.set_max_batch_size(max_batch_size)
        self._judge.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def __serve_build_asgi_app__(self):
        app = guarded_app("rayflow safety judge", self.args.http)
        auth = bearer_auth(self.args.http)
        add_openai_routes(app, DeploymentBackend(self.llm, self.args.llm.model_name), auth,
                          self.args.llm.default_max_tokens, self.args.http)  # fmt: skip

        from rayflow.data.decontam.http import add_contamination_route

        add_contamination_route(app, self.args.evidence_db, auth)  # GET /v1/contamination?dataset=&source=

        @app.get("/healthz")
        async def healthz():
            return await health_reply(self.llm, {"judge_model": self.model_name})

        @app.post("/v1/judge/safety", dependencies=[auth])
        async def safety(body: dict):
            request = _validate(JudgeRequest, JudgeBatch, body, self.args.http.max_items)
            if isinstance(request, JudgeBatch):
                results = await self.judge_requests(request.items)
                return {"results": [r.model_dump() for r in results]}
            [result] = await self.judge_requests([request])
            if result.error is not None:
                raise bad_request(
                    f"query/response: the judge model refused the prompt: {result.error}", "query"
                )
            return result.model_dump()

        @app.post("/v1/judge/meta-eval", dependencies=[auth])
        async def meta_eval(body: dict):
            request = _validate(MetaEvalItem, MetaEvalBatch, body, self.args.http.max_items)
            items = request.items if isinstance(request, MetaEvalBatch) else [request]
            for i, item in enumerate(items):  # each reference AIU costs one verdict generation
                where = (
                    f"items[{i}].reference_aius" if isinstance(request, MetaEvalBatch) else "reference_aius"
                )
                check_count(item.reference_aius, where, self.args.max_reference_aius)
            results = await meta_evaluate(items, self.generate, self.args.metaeval)
            if isinstance(request, MetaEvalItem):
                return {
                    **results[0].model_dump(),
                    "judge_model": self.model_name,
                    "prompt_version": PROMPT_VERSION,
                }
            return {"results": [r.model_dump() for r in results], **aggregate([r.scores() for r in results]),
                    "judge_model": self.model_name, "prompt_version": PROMPT_VERSION}  # fmt: skip

        return app


def build_judge_app(args: JudgeAppArgs) -> Application:
    llm = LLMServer.options(**args.llm_replica.deployment_options()).bind(args.llm)
    return SafetyJudgeServer.options(**args.judge_replica.deployment_options()).bind(llm, args)
