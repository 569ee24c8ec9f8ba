"""HTTP guards on a plain FastAPI app (no Ray): auth, size limit, timeout, field-naming 4xx."""

import asyncio

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, model_validator

from rayflow.serving.guards import HTTPConfig, bearer_auth, guarded_app
from rayflow.serving.openai_api import stream_pieces


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

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return TestClient(app)


def test_bearer_token_is_required_when_configured():
    c = client(api_key="s3cret")
    assert c.post("/items", json={"name": "a"}).status_code == 401
    wrong = c.post("/items", json={"name": "a"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "invalid bearer token"
    assert c.post("/items", json={"name": "a"}, headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert c.post("/items", json={"name": "a"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200  # probes need no token
    assert client().post("/items", json={"name": "a"}).status_code == 200  # no token configured: open


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


class ByteTokenizer:
    """Decodes ids as bytes, so a multi-byte character spans several tokens (as in byte-level BPE)."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="ignore")


def test_stream_pieces_join_back_to_the_text():
    text = "héllo 世界"
    ids = list(text.encode())
    pieces = stream_pieces(text, ids, ByteTokenizer())
    assert "".join(pieces) == text and len(pieces) > 3 and all(pieces)
    assert stream_pieces("abc", [], None) == ["abc"] and stream_pieces("", [], None) == []


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
