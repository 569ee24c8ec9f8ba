"""Sentence-pair classifiers on any Hugging Face sequence-classification model: NLI and factual consistency.

    clf = PairClassifier("tiny")                # or a hub id / local directory, e.g. a DeBERTa-MNLI checkpoint
    clf.probs(["E1 ..."], ["E2 ..."])           # one {label: probability} per pair (softmax over the labels)

Label names come from the checkpoint's `id2label` (case-insensitive; `entailment`, `contradiction`,
`neutral` and their prefixes). Names resolve as RAGChecker's NLI checker resolves them
(`rayflow.eval.ragchecker.tiny_nli`): `tiny` is a small random 3-label classifier built offline, for tests
and CPU smoke runs (its probabilities are deterministic but meaningless), `nli` RefChecker's default NLI
model; anything else is a hub id or a local directory.
"""

from __future__ import annotations

from collections.abc import Sequence

from rayflow.eval.ragchecker.tiny_nli import resolve_nli_model

TINY_NLI = "tiny"


class PairClassifier:
    """A sequence-classification model read as a (premise, hypothesis) pair classifier."""

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 16, max_length: int = 512):
        import inspect

        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = resolve_nli_model(model)
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
