"""The engine interface's own logic: config checks, prompt tokenisation, errors. No model backend needed."""

import sys

import pytest

from rayflow.llm import EngineConfig, EngineError, SamplingParams, build_engine
from rayflow.llm.engine import completion_token_ids, prompt_token_ids, resolve_model_path, truncate_at_stop


def test_openai_backend_requires_base_url():
    with pytest.raises(ValueError, match="base_url"):
        EngineConfig(backend="openai", model="m")


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


def test_prompt_forms(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = prompt_token_ids(tok, "hello world")
    assert ids == tok("hello world", add_special_tokens=False)["input_ids"]
    assert prompt_token_ids(tok, ids) == ids
    chat = prompt_token_ids(tok, [{"role": "user", "content": "hello world"}])
    rendered = tok.decode(chat)
    assert "hello world" in rendered and rendered.endswith("assistant\n")
    assert completion_token_ids(tok, [5, 6]) == [5, 6]
    with pytest.raises(TypeError, match="role"):
        prompt_token_ids(tok, [{"content": "no role"}])
    with pytest.raises(TypeError):
        prompt_token_ids(tok, 42)
