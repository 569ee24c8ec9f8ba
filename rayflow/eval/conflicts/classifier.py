"""Sentence-pair classifiers on any Hugging Face sequence-classification model: NLI and factual consistency.

    clf = PairClassifier("tiny-nli")            # or a hub id / local directory, e.g. a DeBERTa-MNLI checkpoint
    clf.probs(["E1 ..."], ["E2 ..."])           # one {label: probability} per pair (softmax over the labels)

Label names come from the checkpoint's `id2label` (case-insensitive; `entailment`, `contradiction`,
`neutral` and their prefixes). `tiny-nli` names a small random 3-label classifier built offline by
`build_tiny_classifier` on rayflow's tiny tokenizer, for tests and CPU smoke runs, the way `tiny:<size>`
names a tiny language model: its probabilities are deterministic but meaningless.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

TINY_NLI = "tiny-nli"
NLI_LABELS = ("entailment", "neutral", "contradiction")
_CACHE_VERSION = "v1"


def build_tiny_classifier(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Save a random 3-label (entailment, neutral, contradiction) Llama sequence classifier, 2 layers of
    width 128 on rayflow's tiny tokenizer, with that tokenizer into `out_dir`; deterministic in `seed`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from rayflow.llm import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("tiny:tiny"))
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
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def resolve_classifier(name: str) -> str:
    """`tiny-nli` -> its built directory under `$RAYFLOW_CACHE/tiny-classifiers` (built once, atomically);
    any other name (a local directory or hub id) is returned unchanged."""
    if name != TINY_NLI:
        return os.path.expanduser(name)
    root = Path(os.environ.get("RAYFLOW_CACHE", "~/.cache/rayflow")).expanduser() / "tiny-classifiers"
    target = root / f"{_CACHE_VERSION}-nli-seed0"
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".nli.tmp-"))
        try:
            build_tiny_classifier(tmp)
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # another process renamed its build into place first: use that one
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


class PairClassifier:
    """A sequence-classification model read as a (premise, hypothesis) pair classifier."""

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 16, max_length: int = 512):
        import inspect

        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = resolve_classifier(model)
        self.name = model
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(source)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.accepts = set(inspect.signature(self.model.forward).parameters)
        self.labels = [str(self.model.config.id2label[i]).lower() for i in range(self.model.config.num_labels)]

    def label_index(self, prefix: str) -> int | None:
        """Index of the first label starting with `prefix` (`entail`, `contra`, `neutral`), or None."""
        return next((i for i, name in enumerate(self.labels) if name.startswith(prefix)), None)

    def logits(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[list[float]]:
        """Raw logits, one list of `num_labels` floats per (premise, hypothesis) pair, in order."""
        import torch

        if len(premises) != len(hypotheses):
            raise ValueError(f"{len(premises)} premises for {len(hypotheses)} hypotheses")
        out: list[list[float]] = []
        for start in range(0, len(premises), self.batch_size):
            enc = self.tokenizer(
                list(premises[start : start + self.batch_size]),
                list(hypotheses[start : start + self.batch_size]),
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            if "token_type_ids" not in self.accepts:  # e.g. Llama: a BERT-style tokenizer's extra input
                enc.pop("token_type_ids", None)
            with torch.inference_mode():
                out += self.model(**enc).logits.float().cpu().tolist()
        return out

    def probs(self, premises: Sequence[str], hypotheses: Sequence[str]) -> list[dict[str, float]]:
        """Softmax probabilities per pair as `{label: p}` (a one-logit model gives `{label: sigmoid}`)."""
        import math

        rows = []
        for logits in self.logits(premises, hypotheses):
            if len(logits) == 1:
                rows.append({self.labels[0]: 1.0 / (1.0 + math.exp(-logits[0]))})
                continue
            top = max(logits)
            exp = [math.exp(x - top) for x in logits]
            rows.append({name: e / sum(exp) for name, e in zip(self.labels, exp)})
        return rows

    def close(self) -> None:
        """Drop the model (frees its memory once no other reference holds it)."""
        del self.model
