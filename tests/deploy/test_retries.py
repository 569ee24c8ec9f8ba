"""Clients of a rayflow endpoint inside a job retry transient failures: a real local HTTP server answers the
first request of each route with a 503 (or drops the connection) and the next one properly. The server is a
stand-in for a replica that restarts; the clients under test are the real ones (the `openai` engine backend
and the safety evaluation's endpoint judge), and the Ray Data job still succeeds."""

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine
from rayflow.retry import RetryPolicy, call_with_retries, check_reply, is_transient


class FlakyHandler(BaseHTTPRequestHandler):
    """The first POST to each path fails as `server.first_failure` says; later ones answer."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen = self.server.posts.setdefault(self.path, 0)
        self.server.posts[self.path] = seen + 1
        if seen == 0 and self.server.first_failure == "drop":
            self.close_connection = True  # no status line at all: a connection error on the client
            return
        if seen == 0 or self.server.always_fail:
            return self._reply(self.server.first_failure, {"error": {"message": "replica restarting"}})
        if body.get("prompt") == "refused" or body.get("messages", [{}])[0].get("content") == "refused":
            return self._reply(400, {"error": {"message": "prompt too long", "type": "BadRequestError"}})
        self._reply(200, ANSWERS[self.path](body))

    def _reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _completion(body):
    choice = {"index": 0, "text": " river", "finish_reason": "stop", "logprobs": None}
    return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice]}


def _chat(body):
    message = {"role": "assistant", "content": "An apple."}
    choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
    return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]}


def _judge(body):
    return {"results": [{"id": item["id"], "label": "safe", "categories": [], "critique": "", "raw_output": "safe",
                         "parse_ok": True, "judge_model": "judge", "prompt_version": "v", "latency_ms": 1.0}
                        for item in body["items"]]}  # fmt: skip


ANSWERS = {"/v1/completions": _completion, "/v1/chat/completions": _chat, "/v1/judge/safety": _judge}


@contextlib.contextmanager
def flaky_server(first_failure):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    server.posts, server.first_failure, server.always_fail = {}, first_failure, False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=[503, "drop"])
def flaky(request):
    with flaky_server(request.param) as server:
        yield server


def _url(server):
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_openai_backend_retries_a_failed_request(flaky):
    engine = build_engine(EngineConfig(backend="openai", model="m", base_url=_url(flaky) + "/v1"))
    chat = [{"role": "user", "content": "Name a fruit."}]
    out = engine.generate([chat, "The", "refused"], SamplingParams(max_tokens=4))
    assert [o.text for o in out[:2]] == ["An apple.", " river"]
    assert isinstance(out[2], PromptRejected) and "prompt too long" in out[2].reason
    # One failure and one success per route; the 400 is the prompt's own fault, asked once.
    assert flaky.posts == {"/v1/chat/completions": 2, "/v1/completions": 3}


def test_endpoint_judge_retries_a_failed_request(flaky):
    from rayflow.eval.safety.label_eval import EvalSafetyConfig, JudgeTask

    task = JudgeTask(EvalSafetyConfig(endpoint=_url(flaky)))
    rows = [{"id": "a", "lang": "en", "query": "q", "response": "r"}]
    task(rows, None)
    assert rows[0]["pred"] == "safe" and rows[0]["error"] is None
    assert flaky.posts == {"/v1/judge/safety": 2}


def test_retries_are_bounded_and_only_for_transient_failures(flaky):
    flaky.always_fail = flaky.first_failure == 503
    waits = []
    policy = RetryPolicy(attempts=3, backoff_s=0.1, max_backoff_s=0.15)
    with httpx.Client(base_url=_url(flaky)) as client:
        post = lambda: check_reply(client.post("/v1/judge/safety", json={"items": []}))
        if flaky.always_fail:
            with pytest.raises(Exception) as failed:
                call_with_retries(post, "judge", policy, sleep=waits.append)
            assert is_transient(failed.value) and flaky.posts["/v1/judge/safety"] == 3
            assert 0.05 <= waits[0] <= 0.1 and 0.075 <= waits[1] <= 0.15  # doubling, jittered, capped
        else:
            assert call_with_retries(post, "judge", policy, sleep=waits.append).status_code == 200
            assert len(waits) == 1
    not_found = httpx.Response(404, request=httpx.Request("GET", "http://x"))
    calls = []
    with pytest.raises(httpx.HTTPStatusError):
        call_with_retries(lambda: calls.append(1) or not_found.raise_for_status(), "x", policy)
    assert calls == [1]
    assert RetryPolicy().delay_s(1, retry_after_s=120) == RetryPolicy().max_backoff_s


def test_eval_safety_job_survives_a_5xx_from_its_judge(ray_session, tmp_path):
    """The Ray Data job of the safety evaluation against an endpoint whose first answer is a 503."""
    from rayflow.eval.safety.label_eval import EvalSafetyConfig, run

    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"query": f"q{i}", "response": "r", "label": "safe"}) + "\n" for i in range(3))
    )
    with flaky_server(503) as server:
        cfg = EvalSafetyConfig(input=str(data), output_dir=str(tmp_path / "out"), endpoint=_url(server),
                               stage={"cpus_per_actor": 0.5})  # fmt: skip
        result = run(cfg)
        assert server.posts == {"/v1/judge/safety": 2}
    assert result.summary == {"rows_in": 3, "judged": 3, "errors": 0}
