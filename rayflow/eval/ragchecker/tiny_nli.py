"""A tiny offline NLI classifier, so the NLI checker's code path runs in tests without a download.

Like `rayflow.llm.tiny`'s language models: rayflow's own tokenizer and a randomly initialised Llama, here
with a 3-way sequence-classification head whose config names its labels (entailment, neutral,
contradiction), saved in HF format. Its labels are arbitrary but deterministic (seed 0). The name `tiny`
builds it once under `$RAYFLOW_CACHE/tiny-models` (default `~/.cache/rayflow`); any other name is a hub id
or local directory and passes through.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rayflow.config import cache_root

NLI_LABELS = ("entailment", "neutral", "contradiction")
CACHE_NAME = "v1-nli-llama-seed0"
# RefChecker's default NLI checker; `nli` alone names it, as `checker_name=nli` does in RAGChecker.
DEFAULT_NLI_MODEL = "ynie/roberta-large-snli_mnli_fever_anli_R1_R2_R3-nli"


def build_tiny_nli(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny classifier (2 layers, hidden 128, 3 labels) with its tokenizer into `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from rayflow.llm import train_tokenizer

    tokenizer = train_tokenizer()
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(NLI_LABELS),
        id2label=dict(enumerate(NLI_LABELS)),
        label2id={name: i for i, name in enumerate(NLI_LABELS)},
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    tokenizer.model_max_length = 1024
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def resolve_nli_model(name: str) -> str:
    """`tiny` -> the built tiny classifier's directory (built once); `nli` -> RefChecker's default model id;
    anything else unchanged (a hub id or a local directory)."""
    if name == "nli":
        return DEFAULT_NLI_MODEL
    if name != "tiny":
        return name
    root = cache_root() / "tiny-models"
    target = root / CACHE_NAME
    if target.is_dir():  # it only ever appears by an atomic rename, so it is complete
        return str(target)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{CACHE_NAME}.tmp-"))
    try:
        build_tiny_nli(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process renamed its build into place first: use that one
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
