"""The RAG evaluator service: RAGChecker's claim-level metrics behind HTTP, composed over the generic LLM
deployment (claim extraction and LLM checking) with an optional NLI classifier in the evaluator replica.

    POST /v1/evaluate          {results: [RAGChecker items], metrics?, checker?: llm|nli}
                               -> {results: items with claims, labels, per-item metrics; metrics: grouped}
    POST /v1/evaluate/labels   {results: [items carrying labels], metrics?} -> {metrics, results: [{query_id, metrics}]}
                               (no model: the metrics from the labels in the request)
    GET  /healthz              200 once the LLM answers, 503 while it loads

Auth, size limits, timeouts and 4xx bodies (naming the field, e.g. `results[2].gt_answer`) are the judge
app's (`rayflow.serving.guards`). Build with `build_evaluator_app(EvaluatorAppArgs(...))` or the `evaluator`
application of serve/config.yaml (route prefix /eval). See docs/ragchecker.md.
"""

# No `from __future__ import annotations` here: `serve run` turns a YAML `args:` block into the builder's
# pydantic model only when the annotation is the class itself, not a string.
import asyncio
import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from rayflow.config import AppArgs
from rayflow.eval.ragchecker.checking import (
    CheckingConfig,
    LLMChecker,
    LLMExtractor,
    NLIChecker,
    RAGEvaluator,
)
from rayflow.eval.ragchecker.items import check_item
from rayflow.eval.ragchecker.metrics import aggregate, compute_metrics, item_metrics, select_metrics
from rayflow.llm import EngineConfig
from rayflow.serving import HTTPConfig, LLMServer, LLMServerConfig, ReplicaOptions, from_deployment
from rayflow.serving.guards import bad_request, bearer_auth, guarded_app
from rayflow.serving.llm import health_reply

MAX_ITEMS = 64


class EvaluatorAppArgs(AppArgs):
    """The evaluator application: the extraction/checking LLM, the NLI classifier, checking settings, limits."""

    llm: LLMServerConfig = LLMServerConfig(
        engine=EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024),
        served_model_name="ragchecker",
    )
    checking: CheckingConfig = CheckingConfig()
    nli_model: str | None = Field(
        None,
        description="classifier for checker=nli: hub id, directory, nli (RefChecker's) or tiny; None = off",
    )
    max_items: int = Field(MAX_ITEMS, ge=1, description="items per request (larger lists get 400)")
    http: HTTPConfig = HTTPConfig()
    llm_replica: ReplicaOptions = ReplicaOptions(num_cpus=1.0)
    evaluator_replica: ReplicaOptions = ReplicaOptions(num_cpus=0.1)


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[dict] = Field(min_length=1)
    metrics: str | list[str] = "all_metrics"
    checker: Literal["llm", "nli"] = "llm"


class LabelsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[dict] = Field(min_length=1)
    metrics: str | list[str] = "all_metrics"


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class EvaluatorServer:
    def __init__(self, llm, args: EvaluatorAppArgs):
        self.args = args
        self.llm = llm
        self.generate = from_deployment(llm)
        self._nli: NLIChecker | None = None
        self._classifier = None
        self._load = threading.Lock()

    def classifier(self):
        """The replica's one copy of the NLI model (a `PairClassifier`), loaded on first use (an LLM-only
        deployment never pays for it) and shared by the NLI checker and the conflict detector."""
        from rayflow.eval.conflicts import PairClassifier

        with self._load:
            if self._classifier is None:
                self._classifier = PairClassifier(self.args.nli_model)
            return self._classifier

    def nli(self) -> NLIChecker:
        if self.args.nli_model is None:
            raise bad_request("checker: this service has no NLI model (set nli_model in its args)", "checker")
        if self._nli is None:
            self._nli = NLIChecker(self.args.nli_model, self.args.checking, loaded=self.classifier())
        return self._nli

    def __serve_build_asgi_app__(self):
        app = guarded_app("rayflow RAG evaluator", self.args.http)
        auth = bearer_auth(self.args.http)
        model = self.args.llm.model_name

        @app.get("/healthz")
        async def healthz():
            return await health_reply(self.llm, {"model": model, "nli_model": self.args.nli_model})

        @app.post("/v1/evaluate", dependencies=[auth])
        async def evaluate(request: EvaluateRequest):
            metrics = _metrics(request.metrics)
            items = _items(request.results, metrics, self.args.max_items)
            checking = self.args.checking
            if request.checker == "nli":
                checker = self.nli()
            else:
                checker = LLMChecker(self.generate, model, checking)
            evaluator = RAGEvaluator(LLMExtractor(self.generate, model, checking), checker, checking)
            done = await evaluator.evaluate(items, metrics)
            for i, item in enumerate(done):
                if item.get("error"):
                    raise bad_request(f"results[{i}]: {item['error']}", f"results[{i}]")
            return {"results": done, "metrics": aggregate([item["metrics"] for item in done], metrics)}

        @app.post("/v1/evaluate/labels", dependencies=[auth])
        async def evaluate_labels(request: LabelsRequest):
            metrics = _metrics(request.metrics)
            if len(request.results) > self.args.max_items * 16:  # no model: a cheap call takes more items
                raise bad_request(f"results: at most {self.args.max_items * 16} items", "results")
            try:
                overall = await asyncio.to_thread(compute_metrics, request.results, metrics)
            except (ValueError, TypeError) as err:
                field = str(err).split(":", 1)[0]
                raise bad_request(str(err), field) from None
            per_item = [
                {"query_id": r.get("query_id"), "metrics": item_metrics(r, metrics)} for r in request.results
            ]
            return {"metrics": overall, "results": per_item}

        # ECon: POST /v1/conflicts {question?, evidence: [...]} -> {pairs: [{i, j, conflict, score, detector}]},
        # every two texts by the NLI detector on nli_model (docs/conflicts.md).
        from rayflow.eval.conflicts import ConflictService, ConflictsRequest

        conflicts = ConflictService(self.args.nli_model, self.classifier)

        @app.post("/v1/conflicts", dependencies=[auth])
        async def detect_conflicts(request: ConflictsRequest):
            try:
                return await conflicts.reply(request)
            except ValueError as err:  # the message starts with the field it names
                raise bad_request(str(err), str(err).partition(":")[0]) from None

        return app


def _metrics(names) -> tuple[str, ...]:
    try:
        return select_metrics(names)
    except ValueError as err:
        raise bad_request(str(err), "metrics") from None


def _items(results: list[dict], metrics, max_items: int) -> list[dict]:
    if len(results) > max_items:
        raise bad_request(f"results: at most {max_items} items per request, got {len(results)}", "results")
    items = []
    for i, obj in enumerate(results):
        item, reason = check_item(obj, metrics, default_id=str(i))
        if item is None:
            field, sep, _ = reason.partition(":")
            named = (
                sep and field.replace("_", "").replace("[", "").replace("]", "").replace(".", "").isalnum()
            )
            raise bad_request(f"results[{i}]{'.' if named else ': '}{reason}", f"results[{i}]")
        items.append(item)
    return items


def build_evaluator_app(args: EvaluatorAppArgs) -> Application:
    llm = LLMServer.options(**args.llm_replica.deployment_options()).bind(args.llm)
    return EvaluatorServer.options(**args.evaluator_replica.deployment_options()).bind(llm, args)
