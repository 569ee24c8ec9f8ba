"""Claim extraction and claim checking for RAGChecker items, and the label cache that makes reruns cheap.

    evaluator = RAGEvaluator(LLMExtractor(generate, cfg), LLMChecker(generate, cfg), cache=LabelCache(dir))
    done = await evaluator.evaluate(items, select_metrics("all_metrics"))   # copies with claims, labels, metrics

`generate` is the judges' async `Generate` (`rayflow.eval.safety.llm`): `from_engine(engine)` for a local
engine (the Ray Data stage), `from_deployment(handle)` for the Serve LLM deployment. `NLIChecker` checks
with any Hugging Face sequence-classification model instead of an LLM (one pair per forward row, no joint
prompts). Only the claims and labels an item lacks are computed, as RAGChecker does: an item that arrives
with `answer2response` keeps it. A prompt the engine refuses fails only its item (`error` set).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field

from rayflow.config import Config
from rayflow.eval.ragchecker.metrics import ENTAILMENT, NEUTRAL, item_metrics, required_labels
from rayflow.eval.ragchecker.prompts import (
    PROMPT_VERSION,
    Claim,
    check_prompt,
    claim_text,
    extraction_prompt,
    joint_check_prompt,
    merge_labels,
    parse_joint_labels,
    parse_label,
    parse_triplets,
)
from rayflow.eval.safety.llm import Generate
from rayflow.llm import PromptRejected, SamplingParams


class CheckingConfig(Config):
    """How claims are extracted and checked (RAGChecker's names where they mean the same)."""

    joint_check: bool = Field(True, description="check up to joint_check_num claims per prompt (false: one)")
    joint_check_num: int = Field(5, ge=1, description="claims per joint prompt")
    extractor_max_new_tokens: int = Field(256, ge=1, description="new tokens per extraction")
    checker_max_new_tokens: int = Field(
        16, ge=1, description="new tokens per claim checked (a joint prompt gets this x its claims)"
    )
    batch_size_extractor: int = Field(32, ge=1, description="prompts per extractor engine call")
    batch_size_checker: int = Field(32, ge=1, description="prompts (NLI: pairs) per checker engine call")
    max_reference_chars: int = Field(
        0, ge=0, description="split longer references into segments, checked apart and merged; 0 = never"
    )


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


class LabelCache:
    """Claims and labels already computed, by content key, in a directory of JSONL shards.

    Every process appends to its own shard (so Ray actors never share a file) and flushes after each batch;
    a rerun loads every shard and skips what is there. Keys hash the model, the prompt version, the mode
    and the texts, so a changed setting never reuses a stale label.
    """

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, Any] = {}
        for shard in sorted(self.dir.glob("*.jsonl")):
            for line in shard.read_text(encoding="utf-8").splitlines():
                try:
                    key, value = json.loads(line)
                except (ValueError, TypeError):  # a line cut short by a killed process: recomputed
                    continue
                self.entries[key] = value
        self._shard = self.dir / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.hits = self.misses = 0

    def get(self, key: str) -> Any | None:
        value = self.entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put_many(self, entries: dict[str, Any]) -> None:
        if not entries:
            return
        self.entries.update(entries)
        with self._shard.open("a", encoding="utf-8") as f:
            for key, value in entries.items():
                f.write(json.dumps([key, value], ensure_ascii=False) + "\n")


async def _generate_in_batches(
    generate: Generate, prompts: list[str], params: SamplingParams, batch_size: int
) -> list:
    out: list = []
    for start in range(0, len(prompts), batch_size):
        chunk = [[{"role": "user", "content": p}] for p in prompts[start : start + batch_size]]
        out.extend(await generate(chunk, params))
    return out


class LLMExtractor:
    """Claims of texts as triplets, by a language model through the engine layer."""

    def __init__(self, generate: Generate, model: str, cfg: CheckingConfig, cache: LabelCache | None = None):
        self.generate, self.model, self.cfg, self.cache = generate, model, cfg, cache

    async def extract(self, pairs: Sequence[tuple[str, str]]) -> list[list[Claim] | PromptRejected]:
        """Per (question, text): its claims (an empty list for `Abstain`), or the engine's refusal."""
        keys = [_key("extract", self.model, PROMPT_VERSION, q, t) for q, t in pairs]
        out: list = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [i for i, o in enumerate(out) if o is None]
        params = SamplingParams(temperature=0.0, max_tokens=self.cfg.extractor_max_new_tokens)
        gens = await _generate_in_batches(
            self.generate, [extraction_prompt(*pairs[i]) for i in todo], params, self.cfg.batch_size_extractor
        )
        fresh = {}
        for i, gen in zip(todo, gens):
            out[i] = gen if isinstance(gen, PromptRejected) else parse_triplets(gen.text)
            if not isinstance(gen, PromptRejected):
                fresh[keys[i]] = out[i]
        if self.cache:
            self.cache.put_many(fresh)
        return out


class Checker(Protocol):
    """Labels claims against one reference text each."""

    async def check(self, pairs: Sequence[tuple[Sequence[Claim], str]]) -> list[list[str] | PromptRejected]:
        """Per (claims, reference): one label per claim, or the engine's refusal of one of its prompts."""
        ...


class LLMChecker:
    """Checking by a language model: jointly (`joint_check_num` claims per prompt) or one claim per prompt."""

    def __init__(self, generate: Generate, model: str, cfg: CheckingConfig, cache: LabelCache | None = None):
        self.generate, self.model, self.cfg, self.cache = generate, model, cfg, cache
        self.mode = f"joint{cfg.joint_check_num}" if cfg.joint_check else "single"

    async def check(self, pairs: Sequence[tuple[Sequence[Claim], str]]) -> list[list[str] | PromptRejected]:
        size = self.cfg.joint_check_num if self.cfg.joint_check else 1
        # One prompt per group of claims; the cache keys each claim on its own, so a group whose claims are
        # all labelled is not asked again.
        labels: list[list[str | None]] = []
        groups: list[tuple[int, list[int]]] = []  # (pair index, claim indices of one prompt)
        for p, (claims, reference) in enumerate(pairs):
            known = [self._cached(c, reference) for c in claims]
            labels.append(known)
            missing = [i for i, label in enumerate(known) if label is None]
            groups += [(p, missing[s : s + size]) for s in range(0, len(missing), size)]
        prompts = [self._prompt([pairs[p][0][i] for i in idx], pairs[p][1]) for p, idx in groups]
        grouped = {}
        for (p, idx), prompt in zip(groups, prompts):
            grouped.setdefault(len(idx), []).append((p, idx, prompt))
        rejected: dict[int, PromptRejected] = {}
        fresh = {}
        # Prompts of equal group size share max_tokens, so each size is one run of engine calls.
        for n, members in sorted(grouped.items()):
            params = SamplingParams(temperature=0.0, max_tokens=self.cfg.checker_max_new_tokens * n)
            gens = await _generate_in_batches(
                self.generate, [m[2] for m in members], params, self.cfg.batch_size_checker
            )
            for (p, idx, _), gen in zip(members, gens):
                if isinstance(gen, PromptRejected):
                    rejected.setdefault(p, gen)
                    continue
                got = parse_joint_labels(gen.text, n) if self.cfg.joint_check else [parse_label(gen.text)]
                for i, label in zip(idx, got):
                    labels[p][i] = label
                    fresh[self._key(pairs[p][0][i], pairs[p][1])] = label
        if self.cache:
            self.cache.put_many(fresh)
        return [rejected.get(p, row) for p, row in enumerate(labels)]

    def _prompt(self, claims: list[Claim], reference: str) -> str:
        return (
            joint_check_prompt(claims, reference)
            if self.cfg.joint_check
            else check_prompt(claims[0], reference)
        )

    def _key(self, claim: Claim, reference: str) -> str:
        return _key("check", self.model, PROMPT_VERSION, self.mode, claim_text(claim), reference)

    def _cached(self, claim: Claim, reference: str) -> str | None:
        return self.cache.get(self._key(claim, reference)) if self.cache else None


def nli_label(name: str) -> str:
    """A classifier's label name -> Entailment / Neutral / Contradiction (`ENTAILMENT`, `entails`, `LABEL_x`
    is refused)."""
    lowered = name.lower()
    for prefix, label in (("entail", ENTAILMENT), ("neutral", NEUTRAL), ("contradict", "Contradiction")):
        if lowered.startswith(prefix):
            return label
    raise ValueError(
        f"checker_name: the classifier's label {name!r} is not entailment/neutral/contradiction; "
        "an NLI checker needs a model whose config names its labels (id2label)"
    )


class NLIChecker:
    """Checking by a sequence-classification NLI model: premise = reference, hypothesis = the claim's text.

    `model` is a hub id, a local directory or `tiny` (a random classifier built offline, for tests). Joint
    prompts do not apply: every (claim, reference) pair is one classifier row, `batch_size_checker` rows per
    forward.
    """

    def __init__(
        self, model: str, cfg: CheckingConfig, cache: LabelCache | None = None, device: str = "cpu", loaded=None
    ):
        """`loaded`: a `rayflow.eval.conflicts.PairClassifier` already holding `model`, whose tokenizer and
        weights are used instead of loading a second copy (a Serve replica shares one between its routes)."""
        import torch

        self.model_name, self.cfg, self.cache = model, cfg, cache
        if loaded is not None:
            self.tokenizer, self.model, device = loaded.tokenizer, loaded.model, loaded.device
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from rayflow.eval.ragchecker.tiny_nli import resolve_nli_model

            path = resolve_nli_model(model)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        self.labels = [nli_label(self.model.config.id2label[i]) for i in range(self.model.config.num_labels)]
        self.device = device
        self._torch = torch

    async def check(self, pairs: Sequence[tuple[Sequence[Claim], str]]) -> list[list[str] | PromptRejected]:
        flat = [(claim_text(c), ref) for claims, ref in pairs for c in claims]
        keys = [_key("nli", self.model_name, hyp, ref) for hyp, ref in flat]
        out = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [i for i, o in enumerate(out) if o is None]
        fresh = {}
        for start in range(0, len(todo), self.cfg.batch_size_checker):
            idx = todo[start : start + self.cfg.batch_size_checker]
            for i, label in zip(idx, self.classify([flat[i][1] for i in idx], [flat[i][0] for i in idx])):
                out[i] = fresh[keys[i]] = label
        if self.cache:
            self.cache.put_many(fresh)
        result, at = [], 0
        for claims, _ in pairs:
            result.append(out[at : at + len(claims)])
            at += len(claims)
        return result

    def classify(self, premises: list[str], hypotheses: list[str]) -> list[str]:
        """One label per (premise, hypothesis); premises are truncated to fit the model's length."""
        batch = self.tokenizer(premises, hypotheses, truncation="only_first", padding=True, return_tensors="pt",
                               max_length=min(self.tokenizer.model_max_length, 512))  # fmt: skip
        with self._torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
        return [self.labels[i] for i in logits.argmax(-1).tolist()]


def segments(reference: str, max_chars: int) -> list[str]:
    """`reference` cut at sentence ends into pieces of at most ~`max_chars` (0 or short: itself)."""
    if max_chars <= 0 or len(reference) <= max_chars:
        return [reference]
    pieces, current = [], ""
    for sentence in re.split(r"(?<=[.!?])\s+", reference):
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    return pieces + ([current] if current else [])


CLAIMS_FOR = {  # label field -> (claims field, reference: "gt_answer" | "response" | "chunks")
    "answer2response": ("response_claims", "gt_answer"),
    "response2answer": ("gt_answer_claims", "response"),
    "retrieved2response": ("response_claims", "chunks"),
    "retrieved2answer": ("gt_answer_claims", "chunks"),
}


class RAGEvaluator:
    """Fills in what RAGChecker items lack: claims, then the labels the requested metrics need, then
    per-item metrics (fractions). Extraction runs before checking, each as few engine calls as batching allows."""

    def __init__(self, extractor: LLMExtractor | None, checker: Checker | None, cfg: CheckingConfig):
        self.extractor, self.checker, self.cfg = extractor, checker, cfg

    async def extract(self, items: list[dict], metrics: Sequence[str]) -> None:
        """Set `response_claims` / `gt_answer_claims` where the needed labels are missing (in place)."""
        jobs = []  # (item, claims field, text field)
        for item in items:
            for field in required_labels(metrics):
                claims_field, _ = CLAIMS_FOR[field]
                text_field = "response" if claims_field == "response_claims" else "gt_answer"
                if item.get("error") or item.get(field) is not None or item.get(claims_field) is not None:
                    continue
                # By identity: two equal items (a repeated question) each get their own claims.
                if not any(j[0] is item and j[1] == claims_field for j in jobs):
                    jobs.append((item, claims_field, text_field))
        if not jobs:
            return
        if self.extractor is None:
            raise ValueError("claims are missing and no extractor is configured")
        found = await self.extractor.extract([(item["query"], item[text]) for item, _, text in jobs])
        for (item, claims_field, _), claims in zip(jobs, found):
            if isinstance(claims, PromptRejected):
                item.setdefault(
                    "error", f"extracting {claims_field}: the engine refused the prompt: {claims.reason}"
                )
            else:
                item[claims_field] = claims

    async def check(self, items: list[dict], metrics: Sequence[str]) -> None:
        """Set the missing label fields `metrics` need, then `metrics` (per-item fractions), in place."""
        pairs: list[tuple[list[Claim], str]] = []
        slots = []  # (item, field, chunk index or None, segment count) per claims x reference check
        for item in items:
            if item.get("error"):
                continue
            for field in required_labels(metrics):
                if item.get(field) is not None:
                    continue
                claims_field, ref = CLAIMS_FOR[field]
                claims = item[claims_field]
                refs = [c["text"] for c in item["retrieved_context"]] if ref == "chunks" else [item[ref]]
                if ref == "chunks":  # claims x chunks, filled chunk by chunk below (no chunks: empty rows)
                    item[field] = [[NEUTRAL] * len(refs) for _ in claims]
                for j, text in enumerate(refs):
                    segs = segments(text, self.cfg.max_reference_chars)
                    pairs += [(claims, s) for s in segs]
                    slots.append((item, field, j if ref == "chunks" else None, len(segs), len(claims)))
        if pairs and self.checker is None:
            raise ValueError("labels are missing and no checker is configured")
        found = await self.checker.check(pairs) if pairs else []
        at = 0
        for item, field, chunk, n_segs, n_claims in slots:
            got, at = found[at : at + n_segs], at + n_segs
            refused = next((g for g in got if isinstance(g, PromptRejected)), None)
            if refused is not None:
                item.setdefault("error", f"checking {field}: the engine refused the prompt: {refused.reason}")
                continue
            merged = [merge_labels([seg[i] for seg in got]) for i in range(n_claims)]
            if chunk is None:
                item[field] = merged
            else:
                for i, label in enumerate(merged):
                    item[field][i][chunk] = label
        for item in items:
            if not item.get("error"):
                item["metrics"] = item_metrics(item, metrics)

    async def evaluate(self, items: list[dict], metrics: Sequence[str]) -> list[dict]:
        """Copies of `items` with claims, labels and per-item `metrics`, or an `error` saying what failed."""
        items = [json.loads(json.dumps(item)) for item in items]
        await self.extract(items, metrics)
        await self.check(items, metrics)
        return items
