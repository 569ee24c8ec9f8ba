"""Behaviour of the tiny offline model builder: tokenizer, determinism, families, loading, cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rayflow.llm import tiny

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny.train_tokenizer()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", tokenizer=tokenizer)


def corpus_loss(model_dir: Path) -> float:
    """Mean next-token loss over fixed 128-token windows spread across the shipped corpus."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor(tok(tiny.CORPUS_PATH.read_text(encoding="utf-8"))["input_ids"])
    windows = ids[: len(ids) // 128 * 128].view(-1, 128)[::8]
    with torch.no_grad():
        return model(input_ids=windows, labels=windows).loss.item()


def test_presets_keep_head_dim_at_least_64():
    for preset in tiny.SIZES.values():
        assert preset["hidden_size"] // preset["num_attention_heads"] >= 64


@pytest.mark.parametrize("text", [
    "Hello world!  Two spaces, a tab\tand a newline.\n\nNext paragraph .",
    "Unicode: café, naïve, 日本語, emoji 😀; url https://example.com/a?b=1&c=2",
    "def add(a, b):\n    return a + b\n",
])
def test_tokenizer_round_trips_text(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_tokenizer_special_tokens(tokenizer):
    assert len(tokenizer) == 1024
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.bos_token == "<|bos|>"
    ids = tokenizer("hi")["input_ids"]
    assert tokenizer.bos_token_id not in ids
    # Special tokens encode to single ids rather than being split into bytes.
    assert len(tokenizer("<|im_start|>")["input_ids"]) == 1


def test_chat_template_has_roles_and_generation_prompt(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And three plus three?"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "<|im_start|>user\nWhat is two plus two?<|im_end|>\n" in text
    assert "<|im_start|>assistant\nFour.<|im_end|>\n" in text
    assert text.endswith("<|im_start|>user\nAnd three plus three?<|im_end|>\n<|im_start|>assistant\n")
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert without + "<|im_start|>assistant\n" == text


def test_tokenizer_training_is_deterministic(tokenizer):
    assert tiny.train_tokenizer().backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_same_seed_same_weights_different_seed_differs(tmp_path, tokenizer, tiny_dir):
    again = tiny.build_tiny_model(tmp_path / "again", tokenizer=tokenizer)
    other = tiny.build_tiny_model(tmp_path / "other", tokenizer=tokenizer, seed=1)
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    first, second = load_file(tiny_dir / "model.safetensors"), load_file(other / "model.safetensors")
    assert first.keys() == second.keys()
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_saved_dir_loads_and_runs_forward(tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert cfg.hidden_size // cfg.num_attention_heads >= 64
    assert cfg.vocab_size == len(tok)
    assert (cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id) == (
        tok.eos_token_id, tok.pad_token_id, tok.bos_token_id)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert all(p.dtype == torch.float32 for p in model.parameters())

    batch = tok(["The kettle clicked off.", "Hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_qwen2_arch_builds_and_runs(tmp_path, tokenizer):
    out = tiny.build_tiny_model(tmp_path / "q", arch="qwen2", tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert logits.shape == (1, 3, len(tokenizer))


def test_unknown_size_or_arch_is_rejected(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="size"):
        tiny.build_tiny_model(tmp_path / "x", size="huge", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="arch"):
        tiny.build_tiny_model(tmp_path / "x", arch="gpt2", tokenizer=tokenizer)


def test_family_shares_tokenizer_and_grows_in_size(tmp_path):
    paths = tiny.build_family(tmp_path, sizes=("tiny", "small"))
    assert paths == {"tiny": tmp_path / "tiny", "small": tmp_path / "small"}
    for name in TOKENIZER_FILES:
        assert (paths["tiny"] / name).read_bytes() == (paths["small"] / name).read_bytes()
    n_params = {size: sum(t.numel() for t in load_file(p / "model.safetensors").values())
                for size, p in paths.items()}
    assert n_params["small"] > n_params["tiny"]


def test_cli_builds_requested_sizes_and_prints_paths(tmp_path, capsys):
    tiny.main(["--out", str(tmp_path), "--sizes", "tiny", "--arch", "qwen2", "--seed", "3"])
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "tiny")]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "tiny").config.model_type == "qwen2"


def test_resolve_model_builds_once_then_hits_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path))
    path = Path(tiny.resolve_model("tiny:tiny"))
    assert path == tmp_path / "tiny-models" / "v1-llama-seed0-steps0" / "tiny"
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("cached model was rebuilt")

    monkeypatch.setattr(tiny, "build_tiny_model", no_rebuild)
    assert tiny.resolve_model("tiny:tiny") == str(path)
    assert tiny.resolve_model("tiny:tiny@0") == str(path)
    # No half-written staging directories are left next to the finished ones.
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_resolved_sizes_share_one_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path))
    weak, strong = Path(tiny.resolve_model("tiny:tiny")), Path(tiny.resolve_model("tiny:small"))
    assert weak.parent == strong.parent
    for name in TOKENIZER_FILES:
        assert (weak / name).read_bytes() == (strong / name).read_bytes()


def test_concurrent_resolves_build_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path))
    calls, real_build = [], tiny.build_tiny_model

    def counting_build(*args, **kwargs):
        calls.append(kwargs["size"])
        return real_build(*args, **kwargs)

    monkeypatch.setattr(tiny, "build_tiny_model", counting_build)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(tiny.resolve_model("tiny:tiny")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["tiny"]
    assert len(set(results)) == 1 and len(results) == 3


@pytest.mark.parametrize("name", ["gpt2", "Qwen/Qwen2.5-0.5B-Instruct", "/models/llama", "./tiny", "tinyllama"])
def test_resolve_model_passes_other_names_through(name, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_CACHE", str(tmp_path))
    assert tiny.resolve_model(name) == name
    assert not (tmp_path / "tiny-models").exists()


@pytest.mark.parametrize("name", ["tiny:huge", "tiny:", "tiny:tiny@x"])
def test_resolve_model_rejects_malformed_tiny_names(name):
    with pytest.raises(ValueError):
        tiny.resolve_model(name)


def test_training_reduces_corpus_loss(tmp_path, tokenizer, tiny_dir):
    trained = tiny.build_tiny_model(tmp_path / "trained", tokenizer=tokenizer, train_steps=30)
    before, after = corpus_loss(tiny_dir), corpus_loss(trained)
    assert after < before - 1.0, (before, after)
