"""OpenAI compatibility as vLLM's server has it, tried with the clients people already use: the official
`openai` client on every route, rayflow's own `openai` backend scoring through echo, and lm-eval's
`local-completions` model running a generation task and a log-likelihood task (written here) against the
served tiny model. One Serve deployment of the generic LLM app (hf backend) for the module, and a second
LLM app in front of it through the `openai` backend with no local tokenizer.

Served outputs are checked against a local hf engine on the same model: greedy decoding is deterministic,
so the server must return exactly what the engine says for the same sampling parameters.
"""

import json
import logging

import httpx
import openai
import pytest

from rayflow.llm import EngineConfig, SamplingParams, build_engine
from tests.conftest import free_port

pytestmark = pytest.mark.slow

CONTEXT = 512


@pytest.fixture(scope="module")
def service(ray_session, tiny_model):
    from ray import serve

    from serve.llm import LLMAppArgs, build_llm_app

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engine = {"backend": "hf", "model": str(tiny_model), "dtype": "float32", "max_model_len": CONTEXT}
    small = {"num_cpus": 0.2}
    served = LLMAppArgs(llm={"engine": engine, "served_model_name": "tiny"}, llm_replica=small,
                        ingress_replica={"num_cpus": 0.1})  # fmt: skip
    # A model known only by its server's name: no local files, so no local tokenizer.
    remote = LLMAppArgs(llm={"engine": {"backend": "openai", "model": "tiny", "base_url": f"{url}/v1"},
                             "served_model_name": "remote"},
                        llm_replica=small, ingress_replica={"num_cpus": 0.1})  # fmt: skip
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_llm_app(served), name="llm", route_prefix="/")
        serve.run(build_llm_app(remote), name="remote", route_prefix="/remote")
        yield url
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def client(service):
    return openai.OpenAI(base_url=f"{service}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def local(tiny_model):
    return build_engine(
        EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=CONTEXT)
    )


def test_models_routes_and_error_bodies(client, service):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4")
    missing = httpx.get(f"{service}/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = httpx.get(f"{service}/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == 405


PENALTIES = {"top_k": 5, "presence_penalty": 1.5, "frequency_penalty": 0.5, "repetition_penalty": 1.8,
             "min_tokens": 12, "seed": 7}  # fmt: skip


def test_chat_takes_every_role_text_parts_names_and_sampling_fields(client, local):
    messages = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Name "}, {"type": "text", "text": "a fruit."}]},
        {"role": "assistant", "content": "Apple."},
        {"role": "tool", "tool_call_id": "call-1", "content": "42"},
        {"role": "user", "content": "Another?"},
    ]  # fmt: skip
    # What the engine sees: roles as they are (like vLLM), parts joined, the name beside the content.
    engine_messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    engine_messages[1] = {"role": "user", "content": "Name a fruit.", "name": "ann"}
    [plain] = local.generate([engine_messages], SamplingParams(max_tokens=16))
    [penalised] = local.generate([engine_messages], SamplingParams(max_tokens=16, **PENALTIES))
    assert plain.text != penalised.text  # the fields change the output, so passing them on is observable
    official = {k: PENALTIES[k] for k in ("presence_penalty", "frequency_penalty", "seed")}
    vllm_only = {k: PENALTIES[k] for k in ("top_k", "repetition_penalty", "min_tokens")}
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0,
                                          extra_body=vllm_only, **official)  # fmt: skip
    assert chat.choices[0].message.content == penalised.text
    assert chat.usage.completion_tokens == len(penalised.token_ids) >= 12
    assert chat.usage.prompt_tokens == penalised.prompt_tokens


def test_chat_refuses_tools_and_structured_output_and_ignores_unknown_fields(client, caplog):
    messages = [{"role": "user", "content": "Hi"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=messages, tools=[tool])
    assert refused.value.param == "tools"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="tiny", messages=messages, response_format={"type": "json_object"}
        )
    assert refused.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x"}}]}])  # fmt: skip
    assert refused.value.param == "messages[0].content[0].type"
    # Fields neither server knows pass (vLLM logs a warning and goes on).
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2,
                                          response_format={"type": "text"}, extra_body={"no_such_field": 1})  # fmt: skip
    assert chat.choices[0].finish_reason == "length"
    from rayflow.serving.openai_api import ChatRequest

    with caplog.at_level(logging.WARNING, logger="rayflow.serving.openai_api"):
        ChatRequest(model="tiny", messages=messages, no_such_field=1).refuse_unsupported()
    assert "no_such_field" in caplog.text  # what the replica logs


def test_streams_send_each_token_with_its_logprobs(client):
    messages = [{"role": "user", "content": "Count: one two"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                           logprobs=True, top_logprobs=2)  # fmt: skip
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                                 logprobs=True, top_logprobs=2, stream=True))  # fmt: skip
    streamed = [
        t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, t.logprob) for t in streamed] == [
        (t.token, t.logprob) for t in whole.choices[0].logprobs.content
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert len(streamed) == 10 and all(len(t.top_logprobs) == 2 for t in streamed)

    done = client.completions.create(
        model="tiny", prompt="Count: one two", max_tokens=6, temperature=0, logprobs=1
    )
    pieces = list(client.completions.create(model="tiny", prompt="Count: one two", max_tokens=6, temperature=0,
                                            logprobs=1, stream=True))  # fmt: skip
    streamed = [v for c in pieces if c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    assert streamed == done.choices[0].logprobs.token_logprobs and len(streamed) > 1
    assert "".join(c.choices[0].text for c in pieces) == done.choices[0].text


def test_streams_carry_the_engines_deltas_usage_last_and_refusals_before_them(client):
    messages = [{"role": "user", "content": "Tell me a story."}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 2 and "".join(content) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    # Several prompts with echo: each choice's stream, in order, then the usage of them all.
    request = {
        "model": "tiny",
        "prompt": ["Once upon", "The sky"],
        "max_tokens": 5,
        "temperature": 0,
        "echo": True,
    }
    done = client.completions.create(**request)
    many = list(client.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    texts = ["", ""]
    for c in many:
        for choice in c.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in sorted(done.choices, key=lambda c: c.index)]
    assert many[-1].usage.model_dump() == done.usage.model_dump()
    with pytest.raises(openai.BadRequestError) as refused:  # a 400 before the first event, as vLLM's
        client.completions.create(model="tiny", prompt=["Fine", ""], max_tokens=4, stream=True)
    assert refused.value.param == "prompt[1]"


def test_completion_prompts_in_every_shape(client, local, tiny_model):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_model)("Once upon", add_special_tokens=False)["input_ids"]
    want = [g.text for g in local.generate(["Once upon", "The sky"], SamplingParams(max_tokens=5))]
    many = client.completions.create(
        model="tiny", prompt=["Once upon", "The sky"], max_tokens=5, temperature=0
    )
    assert [c.text for c in sorted(many.choices, key=lambda c: c.index)] == want
    assert (
        client.completions.create(model="tiny", prompt=ids, max_tokens=5, temperature=0).choices[0].text
        == want[0]
    )
    nested = client.completions.create(model="tiny", prompt=[ids, ids], max_tokens=5, temperature=0)
    assert [c.text for c in nested.choices] == [want[0], want[0]]
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="tiny", prompt=["fine", "word " * 600], max_tokens=5)
    assert refused.value.param == "prompt[1]"


def test_echo_returns_the_prompt_with_its_logprobs(client, local, tiny_model):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_model)("The sky is blue", add_special_tokens=False)["input_ids"]
    [scored] = local.score([ids[:1]], [ids[1:]])
    echoed = client.completions.create(model="tiny", prompt="The sky is blue", max_tokens=1, temperature=0,
                                       echo=True, logprobs=1)  # fmt: skip
    choice = echoed.choices[0]
    assert choice.text.startswith("The sky is blue") and len(choice.logprobs.tokens) == len(ids) + 1
    lps = choice.logprobs.token_logprobs
    assert lps[0] is None and lps[1 : len(ids)] == pytest.approx(scored.logprobs, abs=1e-4)
    assert all(choice.logprobs.tokens[i] in choice.logprobs.top_logprobs[i] for i in range(1, len(ids)))
    only = client.completions.create(model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=0)
    assert only.choices[0].text == "The sky is blue" and len(only.choices[0].logprobs.token_logprobs) == len(
        ids
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="tiny", prompt="x", max_tokens=0)
    assert refused.value.param == "max_tokens"


def test_rayflow_openai_backend_scores_and_samples_against_a_rayflow_server(service, local, tiny_model):
    remote = build_engine(EngineConfig(backend="openai", model="tiny", tokenizer=str(tiny_model),
                                       base_url=f"{service}/v1"))  # fmt: skip
    prompts, completions = ["The sky is", [{"role": "user", "content": "Hi"}]], [" blue", "Hello there"]
    got, want = (
        remote.score(prompts, completions, top_logprobs=2),
        local.score(prompts, completions, top_logprobs=2),
    )
    assert [g.logprobs for g in got] == [pytest.approx(w.logprobs, abs=1e-4) for w in want]
    assert [list(t) for g in got for t in g.top] == [list(t) for w in want for t in w.top]
    params = SamplingParams(max_tokens=12, **PENALTIES)  # sent on, vLLM's extensions too
    assert remote.generate(prompts, params)[0].text == local.generate(prompts, params)[0].text


def test_a_server_in_front_of_a_remote_model_without_a_tokenizer_serves(service, client):
    remote = openai.OpenAI(base_url=f"{service}/remote/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Name a fruit."}]
    want = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, temperature=0)
    got = remote.chat.completions.create(model="remote", messages=messages, max_tokens=6, temperature=0)
    assert got.choices[0].message.content == want.choices[0].message.content
    streamed = remote.chat.completions.create(model="remote", messages=messages, max_tokens=6, temperature=0,
                                              stream=True)  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == want.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        remote.completions.create(model="remote", prompt="x", max_tokens=1, echo=True, logprobs=0)
    assert refused.value.param == "echo"


TASKS = {
    "rf_gen": """task: rf_gen
dataset_path: json
dataset_kwargs: {data_files: {test: DATA/gen.jsonl}}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{question}}\\nA:"
doc_to_target: "{{answer}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 8, do_sample: false, temperature: 0}
metric_list: [{metric: exact_match}]
""",
    "rf_mc": """task: rf_mc
dataset_path: json
dataset_kwargs: {data_files: {test: DATA/mc.jsonl}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{label}}"
metric_list: [{metric: acc}]
""",
}
GEN = [
    {"question": "What colour is the sky?", "answer": "blue"},
    {"question": "Two plus two?", "answer": "four"},
]
MC = [{"question": "The sky is", "choices": ["blue", "green", "loud"], "label": 0},
      {"question": "Water is", "choices": ["dry", "wet"], "label": 1}]  # fmt: skip


def test_lm_eval_local_completions_runs_generation_and_loglikelihood(service, local, tiny_model, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer

    for name, rows in (("gen", GEN), ("mc", MC)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, text in TASKS.items():
        (tmp_path / f"{name}.yaml").write_text(text.replace("DATA", str(tmp_path)))
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    # lm-eval's defaults: token-id prompts (a list of token-id lists), echo + logprobs for log-likelihoods.
    args = (f"model=tiny,base_url={service}/v1/completions,tokenizer={tiny_model},tokenizer_backend=huggingface,"
            f"max_length={CONTEXT},num_concurrent=2,max_retries=1")  # fmt: skip
    out = simple_evaluate(model="local-completions", model_args=args, tasks=list(TASKS),
                          task_manager=TaskManager(include_path=str(tmp_path)), log_samples=True)  # fmt: skip
    assert set(out["results"]) == set(TASKS)

    for sample in out["samples"]["rf_gen"]:
        prompt = f"Q: {sample['doc']['question']}\nA:"
        [want] = local.generate([prompt], SamplingParams(max_tokens=8, stop=("\n",)))
        assert sample["resps"][0][0] == want.text
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for sample in out["samples"]["rf_mc"]:
        context = sample["doc"]["question"]
        for choice, [(loglik, _greedy)] in zip(sample["doc"]["choices"], sample["resps"]):
            whole = tokenizer(f"{context} {choice}", add_special_tokens=False)["input_ids"]
            head = tokenizer(context, add_special_tokens=False)["input_ids"]
            [want] = local.score([whole[: len(head)]], [whole[len(head) :]])
            assert float(loglik) == pytest.approx(want.sum, abs=1e-3)
