"""The engine layer's own logic: config checks, the backend registry, prompt tokenisation, the refusal rule
every backend applies, errors. No model backend needed."""

import json
import sys
import typing

import pytest

from rayflow.llm import EngineConfig, EngineError, SamplingParams, build_engine
from rayflow.llm.backends import BACKENDS
from rayflow.llm.models import resolve_model_path
from rayflow.llm.prompts import (
    completion_token_ids,
    generation_refusal,
    new_token_budget,
    prompt_token_ids,
    scoring_refusal,
    truncate_at_stop,
)


def test_openai_backend_requires_base_url():
    with pytest.raises(ValueError, match="base_url"):
        EngineConfig(backend="openai", model="m")


def test_every_backend_name_is_registered():
    assert set(BACKENDS) == set(typing.get_args(EngineConfig.model_fields["backend"].annotation))
    with pytest.raises(TypeError, match="EngineConfig"):
        build_engine({"backend": "hf"})  # typed configs only: no dict re-parsing


def test_sampling_params_reject_bad_values():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)


def test_missing_model_path_is_named(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(EngineError, match="nope"):
        resolve_model_path(missing)
    with pytest.raises(EngineError, match="nope"):
        build_engine(EngineConfig(backend="hf", model=missing))


def test_hub_ids_pass_through_and_dirs_resolve(tmp_path):
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def test_missing_vllm_names_the_extra(monkeypatch, tiny_model):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(EngineError, match=r"rayflow\[cpu\]"):
        build_engine(EngineConfig(backend="vllm", model=str(tiny_model)))


def test_truncate_at_stop_uses_earliest():
    assert truncate_at_stop("a. b! c", [".", "!"]) == ("a", True)
    assert truncate_at_stop("abc", ["x"]) == ("abc", False)
    assert truncate_at_stop("abc", []) == ("abc", False)


def test_refusal_rule():
    # generation: the prompt must leave room for one new token; max_tokens is capped to what is left
    assert generation_refusal([1, 2, 3], context=4, vocab_size=10) is None
    assert "no room" in generation_refusal([1, 2, 3, 4], context=4, vocab_size=10)
    assert new_token_budget(3, 16, context=4) == 1 and new_token_budget(3, 16, context=None) == 16
    assert generation_refusal([], context=None, vocab_size=None) == "the prompt is empty"
    assert "-1 is negative" in generation_refusal([5, -1], context=None, vocab_size=None)
    assert "10 is outside the vocabulary" in generation_refusal([10], context=None, vocab_size=10)
    # scoring: prompt + completion must leave one position free; completion ids are checked too
    assert scoring_refusal([1, 2], [3], context=4, vocab_size=10) is None
    assert "3 tokens" in scoring_refusal([1, 2], [3], context=3, vocab_size=10)
    assert "empty" in scoring_refusal([], [3], context=None, vocab_size=None)
    assert "outside the vocabulary" in scoring_refusal([1], [12], context=None, vocab_size=10)
    assert scoring_refusal([1], [], context=None, vocab_size=None) is None  # an empty completion scores []


def test_prompt_forms(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = prompt_token_ids(tok, "hello world")
    assert ids == tok("hello world", add_special_tokens=False)["input_ids"]
    assert prompt_token_ids(tok, ids) == ids
    assert prompt_token_ids(tok, "") == prompt_token_ids(tok, []) == []  # empty: rejected by the engine
    chat = prompt_token_ids(tok, [{"role": "user", "content": "hello world"}])
    rendered = tok.decode(chat)
    assert "hello world" in rendered and rendered.endswith("assistant\n")
    assert completion_token_ids(tok, [5, 6]) == [5, 6]
    with pytest.raises(TypeError, match="role"):
        prompt_token_ids(tok, [{"content": "no role"}])
    with pytest.raises(TypeError):
        prompt_token_ids(tok, 42)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_load_tokenizer_remembers_autotokenizers_choice(arch, tmp_path, monkeypatch):
    # transformers picks Qwen2Tokenizer for a qwen2 model whose tokenizer_config.json says TokenizersBackend:
    # the remembered class must be AutoTokenizer's choice, not the file's.
    import transformers
    from transformers import AutoTokenizer

    from rayflow.llm import build_family, load_tokenizer

    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path / "cache"))
    model = str(build_family(tmp_path / "m", arch=arch, vocab_size=300)["tiny"])
    reference = AutoTokenizer.from_pretrained(model)
    memo_dir = tmp_path / "cache" / "tokenizer-classes"
    first = load_tokenizer(EngineConfig(model=model))
    (memo,) = memo_dir.iterdir()
    assert memo.read_text() == type(reference).__name__
    monkeypatch.setattr(transformers, "AutoTokenizer", None)  # the second load must not need it
    second = load_tokenizer(EngineConfig(model=model))
    chat = [{"role": "user", "content": "hello wörld 你好"}]
    for tok in (first, second):
        assert type(tok) is type(reference)
        assert tok("hello wörld 你好")["input_ids"] == reference("hello wörld 你好")["input_ids"]
        assert prompt_token_ids(tok, chat) == prompt_token_ids(reference, chat)
        assert (tok.pad_token_id, tok.eos_token_id) == (reference.pad_token_id, reference.eos_token_id)
    # A changed tokenizer_config.json is another key: AutoTokenizer decides again.
    config = tmp_path / "m" / "tiny" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 77}))
    monkeypatch.undo()
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path / "cache"))
    assert load_tokenizer(EngineConfig(model=model)).model_max_length == 77
    assert len(list(memo_dir.iterdir())) == 2
