"""`POST /v1/conflicts` over HTTP on 127.0.0.1: the evaluator app deployed from its serve/config.yaml args
(tiny LLM on hf, the tiny NLI classifier), with auth and 4xx bodies naming the field."""

from pathlib import Path

import httpx
import pytest
import yaml

from rayflow.eval.conflicts import ConflictsRequest, DetectorConfig, build_detector, detect_conflicts
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow

TOKEN = "conflict-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVIDENCE = [
    "The Aldermoor Maritime Museum reopened on Saturday in Portsmouth after a two-year renovation.",
    "The Aldermoor Maritime Museum reopened on Saturday in Plymouth after a two-year renovation.",
    "Located in Plymouth, the museum holds one of the largest collections of ship models in England.",
]


@pytest.fixture(scope="module")
def http(ray_session):
    from ray import serve

    from serve.evaluator import EvaluatorAppArgs, build_evaluator_app

    config = yaml.safe_load(Path(REPO, "serve/config.yaml").read_text())
    args = next(app for app in config["applications"] if app["name"] == "evaluator")["args"]
    args["http"].update(api_key=TOKEN)
    args["llm_replica"]["num_cpus"] = 0.2
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_evaluator_app(EvaluatorAppArgs(**args)), name="evaluator", route_prefix="/eval")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/eval", timeout=120) as client:
            yield client, args["nli_model"]
    finally:
        serve.shutdown()


def test_conflicts_route_answers_every_pair_as_the_local_detector_does(http):
    client, nli_model = http
    body = {"question": "Which city hosts the Aldermoor Maritime Museum?", "evidence": EVIDENCE}
    assert client.post("/v1/conflicts", json=body).status_code == 401
    reply = client.post("/v1/conflicts", json=body, headers=AUTH)
    assert reply.status_code == 200, reply.text
    local = detect_conflicts(ConflictsRequest(**body), build_detector(DetectorConfig(kind="nli", model=nli_model)))
    assert reply.json() == local
    assert [(p["i"], p["j"], p["detector"]) for p in reply.json()["pairs"]] == [(0, 1, "nli"), (0, 2, "nli"),
                                                                                (1, 2, "nli")]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"evidence": ["only one"]}, "evidence"),
        ({"evidence": ["one", "   "]}, "evidence[1]"),
        ({"evidence": ["one", 2]}, "evidence[1]"),
        ({"evidence": ["one", "two"], "detector": "llm"}, "detector"),
    ],
)
def test_conflicts_route_bad_requests_are_400s_naming_the_field(http, body, param):
    client, _ = http
    reply = client.post("/v1/conflicts", json=body, headers=AUTH)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
