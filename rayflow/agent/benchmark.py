"""Benchmark+: pairs of a questioning strategy and a grading criterion, built from documents by retrieval, or
converted from a static QA set.

    retriever = Retriever.empty(IndexConfig()); retriever.add_documents(read_documents("handbook.jsonl"))
    items, dropped = await build_items(retriever, topics, generate, BenchmarkConfig())
    write_items("benchmark.jsonl", items)          # one Item per line, with its provenance
    items = read_items("benchmark.jsonl")          # errors name the file and line
    items = items_from_qa("qa.jsonl")              # a static QA set: question -> seed, answer -> points
    items = items_from_records([{"question": ..., "answer": ...}], "qa")     # the same from records

Per topic: the best `evidence_k` chunks for it (hybrid search) are the evidence; the strategy (seed question
and how to probe) is drafted from them (`strategy`: an LLM through the engine layer, or `template`); the
criterion is made in two stages: a draft of checkable points (`drafter`: LLM or `extractive`, the evidence's
own sentences), then a verification of each point against the evidence that keeps, rewrites or drops it
(`verifier`: LLM, or `overlap`, the deterministic checker below). An item left with no point is dropped, and
so is a near-duplicate of an earlier item (cosine of their embedded question + points >= `dedup_threshold`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from rayflow.agent.prompts import (
    PROMPT_VERSION,
    draft_prompt,
    parse_points,
    parse_strategy,
    parse_verdict,
    strategy_prompt,
    verify_prompt,
)
from rayflow.config import Config
from rayflow.jsonl import loads_object
from rayflow.llm import Generation, SamplingParams

DEFAULT_STRATEGY = (
    "Ask the seed question; follow up on the details of the answer, press on conditions, exceptions and "
    "amounts, and challenge any point that disagrees with the criterion."
)


class Point(BaseModel):
    """One checkable point of a criterion, with the chunks that state it."""

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    evidence: list[str] = []


class Item(BaseModel):
    """A Benchmark+ item: how to probe (strategy, seed question) and how to grade (criterion points)."""

    id: str = Field(min_length=1)
    topic: str = Field(min_length=1)
    strategy: str = Field(min_length=1)
    seed_question: str = Field(min_length=1)
    criterion: list[Point] = Field(min_length=1)
    evidence: list[str] = []
    provenance: dict[str, Any] = {}


class BenchmarkConfig(Config):
    """How Benchmark+ items are made from documents."""

    evidence_k: int = Field(3, ge=1, description="evidence chunks retrieved per topic (hybrid search)")
    strategy: Literal["llm", "template"] = Field(
        "llm", description="seed question and strategy: LLM or template"
    )
    drafter: Literal["llm", "extractive"] = Field(
        "llm", description="criterion draft: LLM, or the evidence sentences closest to the topic"
    )
    verifier: Literal["llm", "overlap"] = Field(
        "llm", description="criterion check: LLM, or the deterministic word-overlap checker"
    )
    max_points: int = Field(4, ge=1, description="criterion points per item")
    max_tokens: int = Field(256, ge=1, description="tokens per LLM reply while building")
    support: float = Field(
        0.5, gt=0, le=1, description="overlap checker: share of a point's words the evidence must hold"
    )
    keep_support: float = Field(
        0.8, gt=0, le=1, description="overlap checker: at or above, kept; below, rewritten"
    )
    dedup_threshold: float = Field(
        0.92, gt=0, le=1, description="cosine at or above which an item is a near-duplicate"
    )


# --- JSONL --------------------------------------------------------------------------------------------------


def read_items(path: str | Path) -> list[Item]:
    """Items from a Benchmark+ JSONL file; a bad line is an error naming the file, line and field."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        obj, problem = loads_object(line)
        if problem is None:
            try:
                items.append(Item.model_validate(obj))
                continue
            except ValueError as err:
                problem = str(err).replace("\n", " ")
        raise ValueError(f"{path}, line {number}: {problem}")
    return items


def write_items(path: str | Path, items: Sequence[Item]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(i.model_dump_json() + "\n" for i in items), encoding="utf-8")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def items_from_qa(path: str | Path) -> list[Item]:
    """A static QA set (JSONL `{question, answer}`, optional `id`, `topic`) as Benchmark+ items: the question
    is the seed, each sentence of the answer a criterion point. A bad line is an error naming it."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        obj, problem = loads_object(line)
        if problem is not None:
            raise ValueError(f"{path}, line {number}: {problem}")
        records.append((number, obj))
    return [_qa_item(obj, f"{path}, line {n}", n, {"file": str(path), "line": n}) for n, obj in records]


def items_from_records(records: Sequence[dict], name: str) -> list[Item]:
    """QA records (`{question, answer, id?, topic?}`) as items; an error names `name[i]`."""
    return [_qa_item(r, f"{name}[{i}]", i + 1, {"record": i}) for i, r in enumerate(records)]


def _qa_item(obj: dict, where: str, number: int, origin: dict) -> Item:
    missing = [k for k in ("question", "answer") if not isinstance(obj.get(k), str) or not obj[k].strip()]
    if missing:
        raise ValueError(f"{where}: {missing[0]}: a non-empty string is required")
    item_id = str(obj.get("id") or f"qa-{number}")
    points = [Point(id=f"{item_id}.p{j + 1}", text=s) for j, s in enumerate(_sentences(obj["answer"]))]
    return Item(id=item_id, topic=str(obj.get("topic") or "general"), strategy=DEFAULT_STRATEGY,
                seed_question=obj["question"].strip(), criterion=points,
                provenance={"source": "static_qa", **origin, "prompt_version": PROMPT_VERSION})  # fmt: skip


# --- the deterministic overlap checker ----------------------------------------------------------------------

_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "by",
        "with",
        "from",
        "at",
        "as",
        "is",
        "are",
        "be",
        "been",
        "was",
        "were",
        "must",
        "may",
        "can",
        "should",
        "will",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "their",
        "there",
        "which",
        "who",
        "what",
        "when",
        "where",
        "how",
        "any",
        "all",
        "each",
        "per",
        "than",
    ]
)
_NEGATIONS = frozenset(["not", "no", "never", "cannot", "without", "none", "nor"])
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    return [w.replace("n't", "") if w.endswith("n't") else w for w in _WORD.findall(text.lower())]


def _content(text: str) -> set[str]:
    return {w for w in _words(text) if w not in _STOP and w not in _NEGATIONS}


def _negated(text: str) -> bool:
    return any(w in _NEGATIONS for w in _words(text)) or "n't" in text.lower()


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:[.,]\d+)?", text))


def overlap_verdict(
    point: str, evidence: Sequence[str], support: float, keep_support: float
) -> tuple[str, str | None, str]:
    """The deterministic check of one point: (verdict, rewritten text or None, reason).

    The evidence sentence sharing most of the point's content words is its support. Below `support` of the
    words: dropped (unsupported). Supported but negated where the sentence is not (or the reverse), or naming
    a number the sentence does not: dropped (contradicts). Supported below `keep_support`: rewritten as the
    sentence. Otherwise kept.
    """
    words = _content(point)
    sentences = [s for e in evidence for s in _sentences(e)]
    if not words or not sentences:
        return "drop", None, "no content words or no evidence"
    best = max(sentences, key=lambda s: (len(words & _content(s)), -len(s)))
    share = len(words & _content(best)) / len(words)
    if share < support:
        return "drop", None, f"unsupported: {share:.2f} of its words in the best evidence sentence"
    if _negated(point) != _negated(best) or not _numbers(point) <= _numbers(best):
        return "drop", None, f"contradicts the evidence: {best!r}"
    if share < keep_support:
        return "rewrite", best, f"partly supported ({share:.2f}): replaced by the evidence sentence"
    return "keep", None, f"supported ({share:.2f})"


# --- building from documents --------------------------------------------------------------------------------


async def _generate(generate, prompts, cfg: BenchmarkConfig) -> list[str | None]:
    """Each prompt's reply text, or None where the engine refused it."""
    if not prompts:
        return []
    outs = await generate(prompts, SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens))
    return [o.text if isinstance(o, Generation) else None for o in outs]


def _extractive_points(topic: str, evidence: list[str], max_points: int) -> list[str]:
    """The evidence sentences sharing most words with the topic (ties: in order), at most `max_points`."""
    topic_words = _content(topic)
    sentences = [s for e in evidence for s in _sentences(e) if len(_words(s)) >= 5]
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(topic_words & _content(sentences[i])), i))
    return [sentences[i] for i in sorted(ranked[:max_points])]


async def verify_points(points: list[str], evidence: list[str], generate, cfg: BenchmarkConfig) -> list[dict]:
    """Stage 2 for one item: per draft point {draft, verdict (keep|rewrite|drop), text, reason}. An LLM reply
    that does not parse keeps nothing: the point is dropped with that reason."""
    if cfg.verifier == "overlap":
        results = [overlap_verdict(p, evidence, cfg.support, cfg.keep_support) for p in points]
    else:
        replies = await _generate(generate, [verify_prompt(p, evidence) for p in points], cfg)
        results = []
        for reply in replies:
            parsed = parse_verdict(reply) if reply is not None else None
            if parsed is None:
                results.append(("drop", None, "the verifier's reply did not parse"))
            else:
                results.append((parsed[0], parsed[1], f"verifier: {parsed[0]}"))
    return [
        {
            "draft": p,
            "verdict": v,
            "text": new if v == "rewrite" else (p if v == "keep" else None),
            "reason": why,
        }
        for p, (v, new, why) in zip(points, results)
    ]


async def build_items(retriever, topics: Sequence[str], generate, cfg: BenchmarkConfig,
                      source: dict | None = None) -> tuple[list[Item], list[dict]]:  # fmt: skip
    """Benchmark+ items for `topics` over `retriever`'s documents; returns (items, dropped), each dropped entry
    {topic, reason, verification}. `generate` (a `Generate`) is needed unless every stage is deterministic."""
    needs_llm = "llm" in (cfg.strategy, cfg.drafter, cfg.verifier)
    if needs_llm and generate is None:
        raise ValueError("strategy/drafter/verifier: an 'llm' stage needs a model")
    items, dropped = [], []
    for topic in topics:
        hits = retriever.search(topic, cfg.evidence_k, "hybrid")
        evidence = [h.text for h in hits]
        chunk_ids = [h.chunk_id for h in hits]
        if not hits:
            dropped.append({"topic": topic, "reason": "no evidence retrieved", "verification": []})
            continue
        parsed = None
        if cfg.strategy == "llm":
            [reply] = await _generate(generate, [strategy_prompt(topic, evidence)], cfg)
            parsed = parse_strategy(reply) if reply is not None else None
        question, strategy = parsed or (f"What does the guidance say about {topic}?", DEFAULT_STRATEGY)
        if cfg.drafter == "llm":
            [reply] = await _generate(
                generate, [draft_prompt(question, strategy, evidence, cfg.max_points)], cfg
            )
            drafts = parse_points(reply or "", cfg.max_points)
        else:
            drafts = _extractive_points(topic, evidence, cfg.max_points)
        checks = await verify_points(drafts, evidence, generate, cfg)
        kept = [c["text"] for c in checks if c["text"]]
        if not kept:
            dropped.append({"topic": topic, "reason": "no criterion point survived verification",
                            "verification": checks})  # fmt: skip
            continue
        item_id = "bp-" + hashlib.sha1(f"{topic}\n{question}".encode()).hexdigest()[:10]
        points = [
            Point(id=f"{item_id}.p{j + 1}", text=t, evidence=_supporting(t, hits, cfg.support))
            for j, t in enumerate(kept)
        ]
        items.append(Item(id=item_id, topic=topic, strategy=strategy, seed_question=question, criterion=points,
                          evidence=chunk_ids,
                          provenance={"source": "documents", **(source or {}), "doc_ids": sorted({h.doc_id for h in hits}),
                                      "strategy_from": cfg.strategy if parsed or cfg.strategy == "template" else "template (reply did not parse)",
                                      "drafter": cfg.drafter, "verifier": cfg.verifier, "verification": checks,
                                      "prompt_version": PROMPT_VERSION}))  # fmt: skip
    kept_items, duplicates = dedup(items, retriever.embedder, cfg.dedup_threshold)
    dropped += [
        {"topic": i.topic, "reason": f"near-duplicate of {of}", "verification": []} for i, of in duplicates
    ]
    return kept_items, dropped


def _supporting(text: str, hits, support: float) -> list[str]:
    """The retrieved chunks holding at least `support` of a point's content words."""
    words = _content(text)
    return [h.chunk_id for h in hits if words and len(words & _content(h.text)) >= support * len(words)]


def dedup(items: Sequence[Item], embedder, threshold: float) -> tuple[list[Item], list[tuple[Item, str]]]:
    """Items in order, without those whose question + points embed at cosine >= `threshold` to a kept one;
    returns (kept, [(dropped item, id of the kept item it duplicates)])."""
    if not items:
        return [], []
    texts = [i.seed_question + "\n" + "\n".join(p.text for p in i.criterion) for i in items]
    vectors = np.asarray(embedder.encode(texts))
    kept: list[int] = []
    duplicates = []
    for i in range(len(items)):
        sims = vectors[kept] @ vectors[i] if kept else np.array([])
        if len(sims) and sims.max() >= threshold:
            duplicates.append((items[i], items[kept[int(sims.argmax())]].id))
        else:
            kept.append(i)
    return [items[i] for i in kept], duplicates


def topics_of(documents) -> list[str]:
    """One topic per document: its `metadata.topic`, else its title, else its id (in order, without repeats)."""
    seen: dict[str, None] = {}
    for d in documents:
        seen.setdefault(str(d.metadata.get("topic") or d.metadata.get("title") or d.doc_id), None)
    return list(seen)


def item_summary(items: Sequence[Item]) -> dict:
    return {"items": len(items), "points": sum(len(i.criterion) for i in items),
            "topics": len({i.topic for i in items})}  # fmt: skip
