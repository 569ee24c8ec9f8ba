"""HTTP guards on a plain FastAPI app (no Ray): auth, size limit, timeout, field-naming 4xx."""

import asyncio

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, model_validator

from rayflow.serving.guards import HTTPConfig, bearer_auth, guarded_app


class Item(BaseModel):
    name: str
    size: int = 1
    rules: list[str] | None = None

    @model_validator(mode="after")
    def _rules(self):
        if self.rules and self.size < 2:
            raise ValueError("rules: only items of size >= 2 take rules")
        return self


def client(**http) -> TestClient:
    config = HTTPConfig(**http)
    app = guarded_app("test", config)
    auth = bearer_auth(config)

    @app.post("/items", dependencies=[auth])
    async def items(item: Item) -> dict:
        return {"name": item.name}

    @app.post("/slow", dependencies=[auth])
    async def slow() -> dict:
        await asyncio.sleep(2)
        return {}

    @app.post("/raw", dependencies=[auth])
    async def raw(body: dict) -> dict:
        return {"keys": sorted(body)}

    @app.post("/broken", dependencies=[auth])
    async def broken() -> dict:
        raise RuntimeError("secret internals")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return TestClient(app, raise_server_exceptions=False)


def test_bearer_token_is_required_when_configured():
    c = client(api_key="s3cret")
    assert c.post("/items", json={"name": "a"}).status_code == 401
    wrong = c.post("/items", json={"name": "a"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid bearer token"
    assert c.post("/items", json={"name": "a"}, headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert c.post("/items", json={"name": "a"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200  # probes need no token
    assert client().post("/items", json={"name": "a"}).status_code == 200  # no token configured: open


def test_token_is_checked_before_the_body_is_read_and_guards_the_docs():
    c = client(api_key="s3cret", max_request_bytes=100)
    for body in (b"{not json", b"x" * 1000, b'{"name": "\\ud800"}'):  # would be 400/413/400 with the token
        reply = c.post("/items", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"

    def untouchable():  # a body the middleware must not start reading without a token
        raise AssertionError("the body was read before the token was checked")
        yield b""

    assert c.post("/items", content=untouchable()).status_code == 401
    for path in ("/docs", "/openapi.json"):
        assert c.get(path).status_code == 401
        assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200  # routes without bearer_auth stay open
    assert c.post("/healthz").status_code == 405 and c.get("/nowhere").status_code == 404
    assert (
        c.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).json()["info"]["title"] == "test"
    )
    assert client().get("/openapi.json").status_code == 200  # no token configured: open


def test_invalid_unicode_anywhere_in_a_json_body_is_a_400_naming_it():
    c = client()

    def post(raw: str):
        return c.post("/raw", content=raw.encode(), headers={"content-type": "application/json"})

    nested = post('{"items": [{"id": 1}, {"id": "ok", "critique": ["fine", "bad \\udfff"]}]}')
    assert nested.status_code == 400 and nested.json()["error"]["param"] == "items[1].critique[1]"
    assert "lone surrogate U+DFFF at character 4" in nested.json()["error"]["message"]
    assert post('{"\\ud800": 1}').json()["error"]["param"] == "\\ud800"
    assert post('"\\ud800"').json()["error"]["param"] == "body"
    assert post('{"emoji": "\\ud83d\\ude00"}').json() == {"keys": ["emoji"]}  # a surrogate pair is valid
    assert post("[" * 100_000).status_code == 400  # too deep for json: the route's own 400, no crash


def test_server_failures_use_the_openai_error_body():
    reply = client().post("/broken")
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["type"] == "server_error" and "RuntimeError" in error["message"]
    assert "secret internals" not in error["message"]  # details go to the log, not to the client


def test_list_size_limits():
    from fastapi import HTTPException

    from rayflow.serving.guards import check_count

    check_count([1, 2], "stop", 2)
    check_count(None, "stop", 2)
    with pytest.raises(HTTPException) as err:
        check_count([1, 2, 3], "items[0].reference_aius", 2)
    assert err.value.detail["error"]["param"] == "items[0].reference_aius"
    assert "3 entries; the limit is 2" in err.value.detail["error"]["message"]


def test_engine_watch_tells_a_stuck_engine_from_a_busy_or_idle_one():
    from rayflow.serving.llm import EngineWatch

    now = [0.0]
    watch = EngineWatch(stuck_after_s=10, clock=lambda: now[0])
    now[0] = 100.0
    assert watch.problem() is None  # idle for long: not stuck
    watch.arrive()
    now[0] = 105.0
    watch.arrive()
    assert watch.problem() is None  # waiting since 100 s: within the limit
    now[0] = 111.0
    assert "2 requests waiting and no engine call finished for 11 s" in watch.problem()
    watch.progressed()  # a call finished: progress
    assert watch.problem() is None
    watch.leave()
    watch.leave()
    now[0] = 200.0
    assert watch.problem() is None


def test_token_from_environment(monkeypatch):
    monkeypatch.setenv("RAYFLOW_TEST_TOKEN", "from-env")
    c = client(api_key_env="RAYFLOW_TEST_TOKEN")
    assert (
        c.post("/items", json={"name": "a"}, headers={"Authorization": "Bearer from-env"}).status_code == 200
    )
    monkeypatch.delenv("RAYFLOW_TEST_TOKEN")
    with pytest.raises(ValueError, match="RAYFLOW_TEST_TOKEN"):  # unset: refuse to start rather than run open
        client(api_key_env="RAYFLOW_TEST_TOKEN")
    with pytest.raises(ValueError, match="not both"):
        HTTPConfig(api_key="a", api_key_env="B")


def test_validation_errors_name_the_field():
    c = client()
    missing = c.post("/items", json={"size": 3})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "name"
    assert missing.json()["error"]["message"].startswith("name: ")
    wrong_type = c.post("/items", json={"name": "a", "size": "big"})
    assert wrong_type.json()["error"]["param"] == "size"
    model_level = c.post("/items", json={"name": "a", "rules": ["x"]})
    assert model_level.json()["error"] == {
        "message": "rules: only items of size >= 2 take rules", "type": "invalid_request_error",
        "param": "rules", "code": 400,
    }  # fmt: skip
    assert (
        c.post("/items", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 400
    )


def test_request_size_limit():
    c = client(max_request_bytes=100)
    big = c.post("/items", json={"name": "x" * 200})
    assert big.status_code == 413 and "limit is 100" in big.json()["error"]["message"]

    def chunks():  # no content-length: the limit is enforced while reading
        yield b'{"name": "'
        yield b"x" * 200
        yield b'"}'

    streamed = c.post("/items", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert c.post("/items", json={"name": "small"}).status_code == 200


def test_request_timeout():
    slow = client(request_timeout_s=0.2).post("/slow")
    assert slow.status_code == 504 and "0.2 s" in slow.json()["error"]["message"]


def test_missing_routes_and_wrong_methods_get_the_error_body():
    c = client()
    missing = c.get("/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert "/nothing-here" in missing.json()["error"]["message"]
    wrong = c.get("/items")
    assert (
        wrong.status_code == 405 and wrong.json()["error"]["code"] == 405 and "POST" in wrong.headers["allow"]
    )


class _Call:
    """Stands in for a deployment handle's `check_health` method: `.remote()` gives an awaitable."""

    def __init__(self, outcome):
        self.outcome = outcome

    def remote(self):
        async def answer():
            if self.outcome == "hang":
                await asyncio.sleep(60)
            if isinstance(self.outcome, Exception):
                raise self.outcome

        return answer()


class _Handle:
    def __init__(self, outcome):
        self.check_health = _Call(outcome)


def test_health_is_503_until_the_model_answers():
    from rayflow.serving.llm import health_reply, llm_health

    assert asyncio.run(llm_health(_Handle(None))) is None
    assert "not ready" in asyncio.run(llm_health(_Handle("hang"), timeout_s=0.05))
    assert "RuntimeError: engine is closed" in asyncio.run(
        llm_health(_Handle(RuntimeError("engine is closed")))
    )
    assert asyncio.run(health_reply(_Handle(None), {"model": "m"})) == {"status": "ok", "model": "m"}
    broken = asyncio.run(health_reply(_Handle(RuntimeError("x")), {"model": "m"}))
    assert broken.status_code == 503 and b'"status":"unavailable"' in broken.body
