"""The agent app end to end over HTTP on 127.0.0.1, one Serve start for the module: rayflow's own LLM app
(serve/llm.py, hf backend, tiny:small) is the target, reached through the engine's `openai` backend at
/llm/v1; the agent app (its own tiny examiner/grader deployment, the real all-MiniLM-L6-v2 index) builds
Benchmark+ from the shipped handbook and runs a session in the background to its report. Both apps take
their args from serve/config.yaml. The tiny models' words are noise: what is tested is the flow, the
formats, persistence and the guards."""

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = yaml.safe_load(Path(REPO, "serve/config.yaml").read_text())
HANDBOOK = [json.loads(line) for line in (REPO / "examples/agent/handbook.jsonl").read_text().splitlines()]


def app_args(name: str) -> dict:
    return next(a for a in CONFIG["applications"] if a["name"] == name)["args"]


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory):
    from ray import serve

    from serve.agent import AgentAppArgs, build_agent_app
    from serve.llm import LLMAppArgs, build_llm_app

    llm = app_args("llm")
    llm["llm_replica"]["num_cpus"] = 0.2
    agent = app_args("agent")
    agent.update(store=f"sqlite:///{tmp_path_factory.mktemp('agent') / 'sessions.db'}", max_turns=6)
    agent["http"].update(api_key=TOKEN, max_request_bytes=50_000)
    agent["llm_replica"]["num_cpus"] = 0.2
    agent["agent_replica"]["num_cpus"] = 0.2
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_llm_app(LLMAppArgs(**llm)), name="llm", route_prefix="/llm")
        serve.run(build_agent_app(AgentAppArgs(**agent)), name="agent", route_prefix="/agent")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def http(service):
    with httpx.Client(base_url=f"{service}/agent", timeout=120, headers=AUTH) as client:
        yield client


@pytest.fixture(scope="module")
def benchmark(http):
    reply = http.post("/v1/agent/benchmarks", json={"documents": HANDBOOK[:4]})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_health_and_guards(http, service):
    deadline = time.time() + 120  # 503 while the agent model loads (a busy machine), then 200
    while (health := http.get("/healthz", headers={})).status_code == 503 and time.time() < deadline:
        time.sleep(1)
    assert health.status_code == 200 and health.json()["model"] == "agent", health.text
    assert httpx.post(f"{service}/agent/v1/agent/sessions", json={}).status_code == 401
    target = {"base_url": f"{service}/llm/v1", "model": "tiny-small"}
    bad = http.post("/v1/agent/sessions", json={"target": target, "benchmark_id": "x", "turns": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "turns"
    both = http.post("/v1/agent/sessions", json={"target": target, "benchmark_id": "x", "items": []})
    assert both.status_code == 400 and both.json()["error"]["param"].startswith("items")
    many = http.post("/v1/agent/sessions", json={"target": target, "benchmark_id": "x", "turns": 7})
    assert many.status_code == 400 and "limit is 6" in many.json()["error"]["message"]
    missing = http.post("/v1/agent/sessions", json={"target": target, "benchmark_id": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "benchmark_id"
    url = http.post(
        "/v1/agent/sessions", json={"target": {**target, "base_url": "file:///etc"}, "benchmark_id": "x"}
    )
    assert url.status_code == 400 and url.json()["error"]["param"] == "target.base_url"
    assert http.get("/v1/agent/sessions/nope").status_code == 404
    assert http.post("/v1/agent/sessions/nope/run").status_code == 404
    neither = http.post("/v1/agent/benchmarks", json={})
    assert neither.status_code == 400 and neither.json()["error"]["param"] == "documents"
    big = http.post(
        "/v1/agent/benchmarks", content=b"x" * 60_000, headers={"content-type": "application/json"}
    )
    assert big.status_code == 413


def test_benchmarks_from_documents_and_from_a_static_set(http, benchmark):
    items = benchmark["items"]
    assert [i["topic"] for i in items] == [d["metadata"]["topic"] for d in HANDBOOK[:4]]
    assert all(i["criterion"] and i["evidence"] and i["provenance"]["source"] == "documents" for i in items)
    qa = http.post("/v1/agent/benchmarks", json={"qa": [{"question": "How long is a card valid?",
                                                        "answer": "Ten years. Six under 24.", "id": "q1"}]})  # fmt: skip
    assert qa.status_code == 200 and [p["text"] for p in qa.json()["items"][0]["criterion"]] == [
        "Ten years.",
        "Six under 24.",
    ]


def test_a_session_against_the_served_tiny_model_runs_to_its_report(http, service, benchmark):
    ids = [i["id"] for i in benchmark["items"][:2]]
    created = http.post("/v1/agent/sessions", json={
        "target": {"base_url": f"{service}/llm/v1", "model": "tiny-small"}, "benchmark_id": benchmark["benchmark_id"],
        "item_ids": ids, "turns": 3, "policy": "learned", "seed": 0})  # fmt: skip
    assert created.status_code == 200, created.text
    sid = created.json()["session_id"]
    started = http.post(f"/v1/agent/sessions/{sid}/run")
    assert started.status_code == 202 and started.json()["status"] == "running"
    deadline = time.time() + 180
    while (state := http.get(f"/v1/agent/sessions/{sid}").json())["status"] == "running":
        assert time.time() < deadline, state["progress"]
        time.sleep(1)
    assert state["status"] == "done", state["error"]
    turns = state["transcript"]
    assert state["progress"] == {"turns_done": 6, "turns_max": 6} and len(turns) == 6
    assert [t["item_id"] for t in turns] == [ids[0]] * 3 + [ids[1]] * 3
    assert turns[0]["type"] == "seed" and turns[0]["question"] == benchmark["items"][0]["seed_question"]
    assert all(t["answer"] and t["error"] is None for t in turns)  # the served model answered every turn
    # The learned policy (trained where deepen is informative) deepens.
    assert {t["type"] for t in turns[1:3]} == {"deepen"}
    assert state["scores"]["turns"] == 6 and state["scores"]["parse_failures"] == sum(
        not t["parse_ok"] for t in turns
    )
    report = http.get(f"/v1/agent/sessions/{sid}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/markdown")
    assert report.text.startswith("# TestAgent report: tiny-small") and "| professionalism |" in report.text
    assert "## By topic" in report.text and benchmark["items"][0]["topic"] in report.text
    again = http.post(f"/v1/agent/sessions/{sid}/run")
    assert again.status_code == 200 and again.json()["status"] == "done"
