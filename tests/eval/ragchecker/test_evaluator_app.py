"""The RAG evaluator service over HTTP on 127.0.0.1: Serve, the generic LLM deployment on the tiny model (hf
backend) and the tiny NLI classifier, deployed from the `evaluator` args in serve/config.yaml."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml

from rayflow.eval.ragchecker import LABEL_FIELDS, compute_metrics
from rayflow.eval.ragchecker.checking import CheckingConfig, NLIChecker
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow

TOKEN = "eval-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LABELLED = json.loads((REPO / "examples/ragchecker/labelled.json").read_text())["results"]


@pytest.fixture(scope="module")
def http(ray_session):
    from ray import serve

    from serve.evaluator import EvaluatorAppArgs, build_evaluator_app

    config = yaml.safe_load(Path(REPO, "serve/config.yaml").read_text())
    args = next(app for app in config["applications"] if app["name"] == "evaluator")["args"]
    args["http"].update(api_key=TOKEN, max_request_bytes=50_000)
    args["llm_replica"]["num_cpus"] = 0.2
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_evaluator_app(EvaluatorAppArgs(**args)), name="evaluator", route_prefix="/eval")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/eval", timeout=120) as client:
            yield client
    finally:
        serve.shutdown()


def unlabelled(items):
    return [{k: v for k, v in item.items() if k not in LABEL_FIELDS} for item in items]


def test_health_auth_and_labels_only_metrics(http):
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert http.post("/v1/evaluate/labels", json={"results": LABELLED}).status_code == 401
    reply = http.post("/v1/evaluate/labels", json={"results": LABELLED}, headers=AUTH)
    assert reply.status_code == 200
    assert reply.json()["metrics"] == compute_metrics(LABELLED)
    assert [r["query_id"] for r in reply.json()["results"]] == ["q1", "q2", "q3", "q4"]
    missing = [LABELLED[0], {k: v for k, v in LABELLED[1].items() if k != "retrieved2answer"}]
    bad = http.post("/v1/evaluate/labels", json={"results": missing}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "results[1].retrieved2answer"


def test_evaluate_with_the_llm_and_the_nli_checker(http):
    items = unlabelled(LABELLED[:2])
    items[1] = {k: v for k, v in items[1].items() if not k.endswith("_claims")}  # extracted by the service
    reply = http.post("/v1/evaluate", json={"results": items}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    for r in body["results"]:
        assert len(r["answer2response"]) == len(r["response_claims"])
        assert all(len(row) == len(r["retrieved_context"]) for row in r["retrieved2answer"])
    assert body["results"][0]["response_claims"] == LABELLED[0]["response_claims"]
    assert body["metrics"] == compute_metrics(body["results"])
    # NLI: the same labels a local NLIChecker gives for the same pairs.
    nli = http.post("/v1/evaluate", json={"results": items[:1], "checker": "nli", "metrics": "faithfulness"},
                    headers=AUTH).json()["results"][0]  # fmt: skip
    local = NLIChecker("tiny", CheckingConfig())
    item = LABELLED[0]
    pairs = [(item["response_claims"], c["text"]) for c in item["retrieved_context"]]
    by_chunk = asyncio.run(local.check(pairs))
    assert nli["retrieved2response"] == [list(row) for row in zip(*by_chunk)]
    assert nli.get("answer2response") is None


def test_client_mistakes_are_400s_naming_the_field(http):
    item = unlabelled(LABELLED[:1])[0]
    cases = [
        ({"results": [{**item, "query": 7}]}, "results[0]", "results[0].query: must be a string"),
        ({"results": [item], "metrics": ["accuracy"]}, "metrics", "unknown metric 'accuracy'"),
        ({"results": [item], "checker": "alignscore"}, "checker", "checker"),
        ({"results": []}, "results", "results"),
    ]
    for body, param, message in cases:
        reply = http.post("/v1/evaluate", json=body, headers=AUTH)
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["param"] == param and message in reply.json()["error"]["message"]
    too_big = http.post("/v1/evaluate", json={"results": [item] * 100}, headers=AUTH)
    assert too_big.status_code == 413
    assert http.get("/healthz").status_code == 200  # the service took none of it badly
