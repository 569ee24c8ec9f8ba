"""Serving reliability on loopback, as an outside user probes it: the judge app on a real multi-process vLLM
engine and the generic LLM app on transformers, deployed once for the module.

The regressions of issue 18: one request that wedged the judge for good (a seed or max_tokens past 64 bits),
an engine killed under the service while /healthz said 200, client mistakes answered with 500s (and failing
their batch-mates), the two backends disagreeing on limits; then a seeded fuzz of request bodies. The engine
kill runs last: it replaces the judge's LLM replica.
"""

import json
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from rayflow.llm import SamplingParams
from tests.conftest import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TOKEN = "reliability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTEXT = 1024
JUDGE = ""  # the judge app (vLLM) at /, the generic app (hf) at /llm
LLM = "/llm"
APPS = {JUDGE: {"model": "judge-model", "headers": AUTH}, LLM: {"model": "hf-model", "headers": {}}}
WEDGE_SEED = 1180591620717411303424  # 2**70: vLLM's engine client cannot send it to its engine process
RECOVERY_BOUND_S = 240


@pytest.fixture(scope="module")
def service(ray_session, tiny_model):
    from ray import serve

    from serve.judge import JudgeAppArgs, build_judge_app
    from serve.llm import LLMAppArgs, build_llm_app

    engine = {"model": str(tiny_model), "dtype": "float32", "max_model_len": CONTEXT}
    # Health checked every second (Serve replaces a replica after 3 failures in a row), so the kill test
    # measures recovery rather than the default 10 s period.
    replica = {"num_cpus": 0.5, "health_check_period_s": 1, "health_check_timeout_s": 10}
    judge = JudgeAppArgs(
        llm={"engine": {"backend": "vllm", **engine}, "served_model_name": "judge-model"},
        judge={"max_tokens": 8},
        metaeval={"extraction_max_tokens": 8, "verdict_max_tokens": 4},
        http={"api_key": TOKEN},
        llm_replica=replica,
        judge_replica={"num_cpus": 0.1},
    )
    llm = LLMAppArgs(llm={"engine": {"backend": "hf", **engine}, "served_model_name": "hf-model"},
                     llm_replica={"num_cpus": 0.2}, ingress_replica={"num_cpus": 0.1})  # fmt: skip
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_judge_app(judge), name="judge", route_prefix="/")
        serve.run(build_llm_app(llm), name="llm", route_prefix="/llm")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def http(service):
    with httpx.Client(base_url=service, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def judge_llm(service):
    from ray import serve

    return serve.get_deployment_handle("LLMServer", app_name="judge")


def post_raw(http, path: str, body: str, headers: dict) -> httpx.Response:
    """POST a JSON text as is: lone surrogates (`\\ud800`) only exist as JSON escapes."""
    return http.post(path, content=body.encode(), headers={**headers, "content-type": "application/json"})


def completion(app: str, **fields) -> dict:
    return {
        "model": APPS[app]["model"],
        "prompt": "Once upon a time",
        "max_tokens": 4,
        "temperature": 0,
        **fields,
    }


def test_the_wedge_request_is_a_400_and_the_engine_serves_on(http, judge_llm):
    for app in APPS:
        path, headers = f"{app}/v1/completions", APPS[app]["headers"]
        wedge = http.post(path, json=completion(app, temperature=0.5, seed=WEDGE_SEED), headers=headers)
        assert wedge.status_code == 400 and wedge.json()["error"]["param"] == "seed", wedge.text
        huge = http.post(path, json=completion(app, max_tokens=10**30), headers=headers)
        assert huge.status_code == 400 and huge.json()["error"]["param"] == "max_tokens", huge.text
        assert http.post(path, json=completion(app), headers=headers).status_code == 200
    # Past the HTTP bounds, straight into the engine (as a caller skipping validation would): vLLM fails that
    # call part-way through queueing it; the requests it left behind are aborted, so the next call runs.
    unchecked = SamplingParams.model_construct(**{**SamplingParams().model_dump(), "seed": WEDGE_SEED,
                                                  "temperature": 0.5, "max_tokens": 4})  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017 - whatever vLLM raises for it; the point is what follows
        judge_llm.complete.remote("Once upon a time", unchecked).result(timeout_s=60)
    done = judge_llm.complete.remote("Once upon a time", SamplingParams(max_tokens=4)).result(timeout_s=60)
    assert done.generation.token_ids and http.get("/healthz").json()["status"] == "ok"


LONE = "\\ud800"  # a JSON escape: the lone surrogate itself cannot be encoded into the body
MISTAKES = [  # (request fields as JSON text, the field the 400 must name)
    (f'"prompt": "Once {LONE}"', "prompt"),
    ('"prompt": []', "prompt"),
    ('"prompt": [-1]', "prompt"),
    ('"prompt": [1000000000]', "prompt"),
    (f'"prompt": "Once", "seed": {WEDGE_SEED}', "seed"),
    ('"prompt": "Once", "seed": -1', "seed"),
    ('"prompt": "Once", "max_tokens": 1000000000000000000000000000000', "max_tokens"),
    (f'"prompt": "Once", "max_tokens": {CONTEXT + 1}', "max_tokens"),
    ('"prompt": "Once", "stop": [""]', "stop"),
    ('"prompt": "Once", "stop": ["a", "b", "c", "d", "e"]', "stop"),
    (f'"prompt": "Once", "stop": ["{LONE}"]', "stop[0]"),
    (f'"prompt": "Once", "user": "{LONE}"', "user"),
]


@pytest.mark.parametrize("app", list(APPS), ids=["judge-vllm", "llm-hf"])
def test_client_mistakes_are_400s_naming_the_field_alike_on_both_backends(http, app):
    headers = APPS[app]["headers"]
    for fields, param in MISTAKES:
        body = f'{{"model": "{APPS[app]["model"]}", {fields}}}'
        reply = post_raw(http, f"{app}/v1/completions", body, headers)
        assert reply.status_code == 400, (fields, reply.text)
        assert reply.json()["error"]["param"] == param, (fields, reply.text)
    chat = {"model": APPS[app]["model"], "max_tokens": 4}
    lone_chat = json.dumps({**chat, "messages": [{"role": "user", "content": "@"}]}).replace("@", LONE)
    assert post_raw(http, f"{app}/v1/chat/completions", lone_chat, headers).json()["error"]["param"] == (
        "messages[0].content"
    )
    many = {**chat, "messages": [{"role": "user", "content": "hi"}] * 257}
    reply = http.post(f"{app}/v1/chat/completions", json=many, headers=headers)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages"


def test_judge_routes_bound_their_lists_and_check_the_token_first(http):
    item = {"query": "How do I bake bread?", "response": "Mix flour and water."}
    lone_id = json.dumps({**item, "id": "@"}).replace("@", LONE)
    assert post_raw(http, "/v1/judge/safety", lone_id, AUTH).json()["error"]["param"] == "id"
    lone_critique = json.dumps({**item, "hypothesis_critique": "@", "reference_aius": ["x"]}).replace(
        "@", LONE
    )
    assert post_raw(http, "/v1/judge/meta-eval", lone_critique, AUTH).json()["error"]["param"] == (
        "hypothesis_critique"
    )
    too_many = http.post("/v1/judge/safety", json={"items": [item] * 257}, headers=AUTH)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "items"
    aius = {**item, "hypothesis_critique": "Safe.", "reference_aius": ["a"] * 65}
    assert (
        http.post("/v1/judge/meta-eval", json=aius, headers=AUTH).json()["error"]["param"] == "reference_aius"
    )
    batch = http.post("/v1/judge/meta-eval", json={"items": [aius]}, headers=AUTH)
    assert batch.json()["error"]["param"] == "items[0].reference_aius"
    # No token: 401 before the body is parsed or measured; the API docs need the token too.
    assert post_raw(http, "/v1/judge/safety", "{not json", {}).status_code == 401
    assert http.post("/v1/judge/safety", content=b"x" * 2_000_000).status_code == 401
    assert http.get("/docs").status_code == 401 and http.get("/openapi.json").status_code == 401
    assert http.get("/openapi.json", headers=AUTH).status_code == 200
    assert http.get("/llm/openapi.json").status_code == 200  # the llm app has no token: open


def test_a_bad_request_never_fails_its_batch_mates(http, judge_llm):
    bad = [completion(app, prompt=p) for app in APPS for p in ([], [-1], [10**9])]
    bad += [completion(app, max_tokens=10**30) for app in APPS]
    good = [completion(app, prompt=f"Story number {i}:") for app in APPS for i in range(6)]
    bodies = [b for pair in zip(good, bad + bad[:4]) for b in pair]  # interleaved, all at once
    judge_llm.reset_stats.remote().result()

    def send(body):
        app = LLM if body["model"] == APPS[LLM]["model"] else JUDGE
        return http.post(f"{app}/v1/completions", json=body, headers=APPS[app]["headers"])

    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(send, bodies))
    for body, reply in zip(bodies, replies):
        expected = 200 if body in good else 400
        assert reply.status_code == expected, (body, reply.text)
    assert judge_llm.stats.remote().result()["max_batch_size"] > 1  # bad and good shared engine batches
    alone = send(good[0]).json()["choices"][0]["text"]
    assert replies[0].json()["choices"][0]["text"] == alone  # greedy: the batch did not change the answer

    # An engine call that raises (a prompt of a type no backend takes) is retried prompt by prompt: only its
    # own caller gets the error.
    params = SamplingParams(max_tokens=4)
    calls = [judge_llm.complete.remote(p, params) for p in ("Once", 42, "Twice", "Thrice")]
    with pytest.raises(Exception, match="TypeError|prompt is a str"):
        calls[1].result(timeout_s=60)
    assert all(calls[i].result(timeout_s=60).generation.token_ids for i in (0, 2, 3))
    refused = judge_llm.complete.remote("Once \ud800", params).result(timeout_s=60)  # non-HTTP callers too
    assert refused.generation is None and "not valid Unicode" in refused.error


def _mutate(rng: random.Random, body: dict) -> dict:
    """One client mistake: a field dropped, retyped, out of range, invalid text, or an unknown field."""
    body = json.loads(json.dumps(body))
    key = rng.choice(sorted(body))
    kind = rng.randrange(6)
    if kind == 0:
        del body[key]
    elif kind == 1:
        body[key] = rng.choice([None, "x", 1.5, [], {}, [[1]], True, -1])
    elif kind == 2:
        body[key] = rng.choice([2**64, -(2**70), 10**30, 0, ""])
    elif kind == 3:
        body[key] = "@surrogate@"
    elif kind == 4:
        body[rng.choice(["colour", "best_of", "echo", "n", "logit_bias"])] = rng.choice([2, True, {"1": 5}])
    else:
        body[key] = [body.get(key)] * rng.choice([0, 300])
    return body


def test_fuzzed_bodies_get_4xx_and_leave_the_service_healthy(http):
    rng = random.Random(18)
    valid = {
        "/v1/judge/safety": {"id": "f", "query": "Hi?", "response": "Hello.", "scheme": "llamaguard"},
        "/v1/judge/meta-eval": {"query": "Hi?", "response": "Hello.", "hypothesis_critique": "Safe.",
                                "reference_aius": ["Safe."]},
        "/v1/completions": completion(JUDGE),
        "/v1/chat/completions": {"model": "judge-model", "messages": [{"role": "user", "content": "Hi"}],
                                 "max_tokens": 4},
        "/llm/v1/completions": completion(LLM),
        "/llm/v1/chat/completions": {"model": "hf-model", "messages": [{"role": "user", "content": "Hi"}],
                                     "max_tokens": 4},
    }  # fmt: skip
    statuses = []
    for _ in range(60):
        path = rng.choice(sorted(valid))
        body = json.dumps(_mutate(rng, valid[path])).replace('"@surrogate@"', f'"x{LONE}"')
        reply = post_raw(http, path, body, {} if path.startswith(LLM) else AUTH)
        assert reply.status_code < 500, (path, body[:300], reply.text)
        assert reply.status_code == 200 or "error" in reply.json(), reply.text
        statuses.append(reply.status_code)
    assert sum(400 <= s < 500 for s in statuses) > 40  # the fuzz exercised mistakes, not only valid bodies
    assert http.get("/healthz").json()["status"] == "ok" and http.get("/llm/healthz").json()["status"] == "ok"
    for path in ("/v1/completions", "/llm/v1/completions"):
        body = valid[path]
        assert http.post(path, json=body, headers={} if path.startswith(LLM) else AUTH).status_code == 200


def _engine_core_of_the_judge_replica() -> psutil.Process:
    """The vLLM engine-core process under the judge app's LLM replica (a Ray worker under this test's head)."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ServeReplica:judge:LLMServer" in " ".join(proc.cmdline()):
                return next(c for c in proc.children() if "EngineCore" in c.name() + " ".join(c.cmdline()))
        except (psutil.NoSuchProcess, StopIteration):
            continue
    raise AssertionError("no vLLM engine-core process under the judge's LLM replica")


def test_engine_kill_turns_health_503_and_the_service_recovers(http, record_property):
    # Last in the module: Serve replaces the judge's LLM replica here.
    body = completion(JUDGE)
    assert http.post("/v1/completions", json=body, headers=AUTH).status_code == 200
    _engine_core_of_the_judge_replica().send_signal(signal.SIGKILL)
    killed = time.monotonic()

    def poll(until, what: str):
        while time.monotonic() - killed < RECOVERY_BOUND_S:
            reply = until()
            if reply is not None:
                return reply
            time.sleep(0.5)
        raise AssertionError(f"{what} not within {RECOVERY_BOUND_S} s of the kill")

    down = poll(lambda: (r := http.get("/healthz")).status_code == 503 and r or None, "/healthz 503")
    assert down.json()["status"] == "unavailable" and down.json()["reason"]
    noticed = time.monotonic() - killed
    failed = http.post("/v1/completions", json=body, headers=AUTH)  # dead engine or replacement: never bare
    assert failed.status_code == 200 or failed.json()["error"]["code"] == failed.status_code
    poll(lambda: http.get("/healthz").status_code == 200 or None, "/healthz 200 again")
    poll(
        lambda: http.post("/v1/completions", json=body, headers=AUTH).status_code == 200 or None,
        "a completion",
    )
    recovered = time.monotonic() - killed
    record_property("engine_kill_noticed_s", round(noticed, 1))
    record_property("engine_kill_recovered_s", round(recovered, 1))
    print(f"engine kill: /healthz 503 after {noticed:.1f} s, service back after {recovered:.1f} s")
