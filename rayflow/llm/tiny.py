"""Tiny offline language models for tests, examples and CPU smoke runs.

Everything rayflow does (refinement, preference training, sweeps, judges) needs a causal LM and a
tokenizer, but CI machines and sandboxes have no network and no GPU. This module builds real
Hugging Face checkpoints from nothing: a byte-level BPE tokenizer trained on a small corpus shipped
with the package, and a randomly initialised Llama or Qwen2 model, optionally pre-trained for a few
hundred steps so greedy output looks like words rather than noise. The result is an ordinary
``save_pretrained`` directory that transformers, vLLM (CPU) and DeepSpeed load like any hub model.

Builds are deterministic: the same arguments give byte-identical ``model.safetensors`` on the same
machine, so tests can compare weights and cache directories can be shared between processes.

Models are addressed by name through :func:`resolve_model`: ``tiny:<size>`` or
``tiny:<size>@<train_steps>`` builds (once) into a cache directory and returns its path, while any
other name passes through untouched as a local path or hub id.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rayflow.config import cache_root

# torch and transformers are imported by the functions that build: every job driver and engine actor resolves
# `tiny:` names, and for a model already in the cache that is a path lookup, not ~6 CPU-seconds of imports.
if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

CORPUS_PATH = Path(__file__).with_name("tiny_corpus.txt")

PAD, BOS, IM_START, IM_END = "<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"

# ChatML, the format Qwen uses, so prompts built for the tiny models look like those for real ones.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Sizes step up in width and depth so one family gives a weak and a strong model that share a
# tokenizer (weak-to-strong training). Every preset keeps head_dim >= 64 because vLLM's CPU attention
# kernels reject smaller heads. `lr` is the pre-training learning rate, not a config field: wider presets
# end 200 steps at a much higher loss with the 3e-3 that suits `tiny` (measured on this corpus).
SIZES: dict[str, dict] = {
    "tiny": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "lr": 3e-3,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "lr": 1.5e-3,
    },
    "base": {
        "hidden_size": 384,
        "intermediate_size": 1024,
        "num_hidden_layers": 6,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "lr": 1e-3,
    },
}
for _name, _preset in SIZES.items():
    assert _preset["hidden_size"] // _preset["num_attention_heads"] >= 64, f"{_name}: head_dim < 64"

# Config and model class names in transformers.
ARCHS: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
}

# Bump when a change to the corpus, presets or training would make old cached models stale.
CACHE_VERSION = "v1"
# `tiny:refiner`: rayflow's tiny ProX refiner, trained from the rules teacher (docs/prox_refiner.md); its weights
# ship with the package (built by `python benchmarks/prox_refiner.py --install`), so nothing trains it on use.
REFINER_NAME = "tiny:refiner"
REFINER_DIR = Path(__file__).with_name("tiny_refiner")
_NAME_RE = re.compile(r"tiny:(?P<size>\w+)(?:@(?P<steps>\d+))?")


def train_tokenizer(
    corpus_path: str | os.PathLike | None = None, vocab_size: int = 1024
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ChatML special tokens and chat template.

    ``corpus_path`` defaults to the corpus shipped with rayflow. Byte-level BPE can encode any string,
    and ``decode(encode(text)) == text`` holds for ordinary text. ``<|im_end|>`` is the EOS token so
    chat generations stop at the end of the assistant turn; ``<|bos|>`` exists but is never added
    automatically.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = Path(corpus_path or CORPUS_PATH).read_text(encoding="utf-8")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, IM_START, IM_END],
        # All 256 byte symbols, even those absent from the corpus, so no input is ever unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        # Cleanup strips spaces before punctuation and breaks the round trip. transformers 5 already
        # skips it for BPE but warns; writing False also keeps it off for loaders that still apply it.
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: str | os.PathLike,
    *,
    size: str = "tiny",
    arch: str = "llama",
    seed: int = 0,
    tokenizer: PreTrainedTokenizerFast | None = None,
    train_steps: int = 0,
    max_position_embeddings: int = 1024,
) -> Path:
    """Build one model from the ``size`` preset and save it with its tokenizer into ``out_dir``.

    The model is a ``LlamaForCausalLM`` (``arch="llama"``) or ``Qwen2ForCausalLM`` (``"qwen2"``) with
    the tokenizer's vocabulary, initialised from ``seed``, and pre-trained on the corpus for
    ``train_steps`` steps when that is positive. Weights are saved as float32 safetensors next to the
    tokenizer and a generation config carrying the EOS and pad ids. Returns ``out_dir``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    import torch
    import transformers

    tokenizer = tokenizer or train_tokenizer()
    config_cls, model_cls = (getattr(transformers, cls) for cls in ARCHS[arch])
    preset = dict(SIZES[size])
    lr = preset.pop("lr")
    config = config_cls(
        **preset,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    if train_steps > 0:
        _pretrain(model, tokenizer, steps=train_steps, lr=lr, seed=seed, label=f"{arch}/{size}")

    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    transformers.GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(out)
    return out


def _pretrain(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    *,
    steps: int,
    lr: float,
    seed: int,
    label: str,
    seq_len: int = 128,
    batch_size: int = 8,
) -> None:
    """Next-token training on random windows of the corpus, just enough for word-like greedy output."""
    import torch

    ids = torch.tensor(tokenizer(CORPUS_PATH.read_text(encoding="utf-8"))["input_ids"])
    # A private generator keeps window sampling reproducible whatever else touches the global RNG.
    gen = torch.Generator().manual_seed(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # Short warmup, then cosine decay to zero: a constant rate leaves the loss bouncing at the end.
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
        ),
    )
    model.train()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=gen)
        batch = torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps:
            print(f"[rayflow.tiny] {label} step {step}/{steps} loss {loss.item():.3f}", flush=True)
    model.eval()


def build_family(
    out_dir: str | os.PathLike,
    *,
    sizes: Sequence[str] = ("tiny",),
    arch: str = "llama",
    seed: int = 0,
    train_steps: int = 0,
    vocab_size: int = 1024,
) -> dict[str, Path]:
    """Build several sizes into ``out_dir/<size>``, all sharing one freshly trained tokenizer.

    A shared tokenizer is what lets a weak model's labels or logits feed a stronger one. Returns a
    mapping from size to model directory.
    """
    tokenizer = train_tokenizer(vocab_size=vocab_size)
    return {
        size: build_tiny_model(
            Path(out_dir) / size,
            size=size,
            arch=arch,
            seed=seed,
            tokenizer=tokenizer,
            train_steps=train_steps,
        )
        for size in sizes
    }


def resolve_model(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` or vLLM can load.

    ``tiny:refiner`` is the shipped tiny ProX refiner's directory. ``tiny:<size>`` and
    ``tiny:<size>@<train_steps>`` (e.g. ``tiny:small@200``) name a Llama model built
    with seed 0 and cached under ``$RAYFLOW_CACHE/tiny-models`` (default ``~/.cache/rayflow``); the
    directory is built on first use and its path returned. Every size cached for one ``train_steps``
    value shares the same tokenizer. Any other name is returned unchanged.
    """
    if name == REFINER_NAME:
        if not REFINER_DIR.is_dir():
            raise FileNotFoundError(
                f"{name}: {REFINER_DIR} is missing; build it: python benchmarks/prox_refiner.py --install"
            )
        return str(REFINER_DIR)
    match = _NAME_RE.fullmatch(name)
    if match is None:
        if name.startswith("tiny:"):
            raise ValueError(f"bad tiny model name {name!r}; expected tiny:<size> or tiny:<size>@<steps>")
        return name
    size, steps = match["size"], int(match["steps"] or 0)
    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r} in {name!r}; choose from {sorted(SIZES)}")

    arch, seed = "llama", 0
    root = cache_root() / "tiny-models"
    family = root / f"{CACHE_VERSION}-{arch}-seed{seed}-steps{steps}"
    target = family / size
    # Directories only ever appear by atomic rename, so one that exists is complete: no lock needed.
    if target.is_dir():
        return str(target)

    # Sizes are built on demand rather than all at once, so asking for `tiny` never pays for
    # pre-training `base`; the tokenizer is trained once per family and reused by every size.
    with _locked(root / f"{family.name}.lock"):
        if not target.is_dir():
            tok_dir = family / "tokenizer"
            if not tok_dir.is_dir():
                with _staging(tok_dir) as tmp:
                    train_tokenizer().save_pretrained(tmp)
            from transformers import PreTrainedTokenizerFast

            with _staging(target) as tmp:
                build_tiny_model(
                    tmp,
                    size=size,
                    arch=arch,
                    seed=seed,
                    train_steps=steps,
                    tokenizer=PreTrainedTokenizerFast.from_pretrained(tok_dir),
                )
    return str(target)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` so concurrent processes (Ray workers, pytest-xdist) build once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``final`` and rename it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rayflow.llm.tiny",
        description="Build tiny offline Hugging Face models that share one tokenizer.",
    )
    parser.add_argument("--out", required=True, help="output directory; each size goes to OUT/<size>")
    parser.add_argument(
        "--sizes", nargs="+", default=["tiny"], choices=sorted(SIZES), help="presets to build"
    )
    parser.add_argument("--arch", default="llama", choices=sorted(ARCHS))
    parser.add_argument("--seed", type=int, default=0, help="weight init and training seed")
    parser.add_argument("--train-steps", type=int, default=0, help="pre-training steps on the corpus")
    parser.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size")
    args = parser.parse_args(argv)
    paths = build_family(
        args.out,
        sizes=args.sizes,
        arch=args.arch,
        seed=args.seed,
        train_steps=args.train_steps,
        vocab_size=args.vocab_size,
    )
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
