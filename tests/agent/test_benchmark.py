"""Benchmark+: the two-stage criterion (a deterministic checker drops a point that contradicts its evidence),
building from the shipped handbook with the real all-MiniLM-L6-v2 index, near-duplicate removal, LLM stages on
the tiny model (replies that do not parse never crash a build), static QA conversion and the JSONL format."""

import asyncio
import json

import pytest

from rayflow.agent.benchmark import (
    BenchmarkConfig,
    build_items,
    items_from_qa,
    items_from_records,
    overlap_verdict,
    read_items,
    topics_of,
    verify_points,
    write_items,
)
from rayflow.rag.searcher import read_documents
from tests.conftest import REPO

HANDBOOK = REPO / "examples/agent/handbook.jsonl"
EVIDENCE = [
    (
        "An identity card is valid for 10 years for adults and 6 years for persons under 24. "
        "Registration is free of charge; a late registration costs a fee of 25 euros."
    )
]
OFFLINE = BenchmarkConfig(strategy="template", drafter="extractive", verifier="overlap", max_points=3)


def test_the_checker_keeps_rewrites_and_drops_points_against_the_evidence():
    cfg = BenchmarkConfig(verifier="overlap")
    drafts = [
        "An identity card is valid for 10 years for adults.",          # stated: kept
        "An identity card is valid for 12 years for adults.",          # a number the evidence does not give
        "Registration is not free of charge.",                         # negated where the evidence is not
        "A late registration costs a fee of 25 euros after moving.",   # partly: rewritten as the evidence says
        "Dogs must wear a tax token outside.",                         # unsupported
    ]  # fmt: skip
    checks = asyncio.run(verify_points(drafts, EVIDENCE, None, cfg))
    assert [c["verdict"] for c in checks] == ["keep", "drop", "drop", "rewrite", "drop"]
    assert "contradicts" in checks[1]["reason"] and "contradicts" in checks[2]["reason"]
    assert checks[3]["text"] == "Registration is free of charge; a late registration costs a fee of 25 euros."
    assert checks[0]["text"] == drafts[0] and checks[1]["text"] is None
    assert overlap_verdict("", EVIDENCE, 0.5, 0.8)[0] == "drop"


@pytest.fixture(scope="module")
def retriever():
    from rayflow.retrieval import IndexConfig, Retriever

    r = Retriever.empty(IndexConfig())
    r.add_documents(read_documents(HANDBOOK))
    return r


def test_build_from_the_handbook_with_evidence_and_provenance(retriever, tmp_path):
    documents = read_documents(HANDBOOK)
    topics = topics_of(documents)
    assert topics[0] == "Residence registration" and len(topics) == 12
    # "Dog tax" twice under two names finds the same evidence and points: the second is a near-duplicate.
    items, dropped = asyncio.run(build_items(retriever, [*topics[:4], "Dog tax", "dog tax"], None, OFFLINE))
    assert len(items) == 5
    assert [d["reason"] for d in dropped] == [f"near-duplicate of {items[-1].id}"]
    first = items[0]
    assert first.evidence[0].startswith("lh-01#") and 1 <= len(first.criterion) <= 3
    for point in first.criterion:
        assert point.evidence and set(point.evidence) <= set(first.evidence)
        assert point.text in HANDBOOK.read_text()  # extractive points are the handbook's own sentences
    assert first.provenance["source"] == "documents" and first.provenance["verifier"] == "overlap"
    assert all(v["verdict"] in ("keep", "rewrite") for v in first.provenance["verification"])
    write_items(tmp_path / "b.jsonl", items)
    assert read_items(tmp_path / "b.jsonl") == items


def test_llm_stages_on_the_tiny_model_never_crash(retriever, tiny_model):
    from rayflow.agent.session import threaded
    from rayflow.llm import EngineConfig, build_engine

    engine = build_engine(
        EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=1024)
    )
    cfg = BenchmarkConfig(max_tokens=24, max_points=2)
    items, dropped = asyncio.run(build_items(retriever, ["Dog tax", "Noise rules"], threaded(engine), cfg))
    # The random model writes no verdict line: every point is dropped with that reason, and so every item.
    assert len(items) + len(dropped) == 2
    for d in dropped:
        assert d["reason"] == "no criterion point survived verification"
        assert all(c["reason"] == "the verifier's reply did not parse" for c in d["verification"])
    with pytest.raises(ValueError, match="needs a model"):
        asyncio.run(build_items(retriever, ["Dog tax"], None, BenchmarkConfig()))


def test_static_qa_converts_and_bad_lines_are_named(tmp_path):
    items = items_from_qa(REPO / "examples/agent/qa.jsonl")
    assert len(items) == 12 and items[0].id == "lqa-01" and items[0].topic == "Residence registration"
    assert [p.text for p in items[5].criterion] == ["The permit costs 30 euros per year.",
                                                     "It is valid in the zone printed on it."]  # fmt: skip
    assert items[5].provenance["source"] == "static_qa" and items[5].provenance["line"] == 6
    bad = tmp_path / "qa.jsonl"
    bad.write_text(
        json.dumps({"question": "Q?", "answer": "A."}) + "\n" + json.dumps({"question": "Q?"}) + "\n"
    )
    with pytest.raises(ValueError, match=r"qa.jsonl, line 2: answer: a non-empty string"):
        items_from_qa(bad)
    with pytest.raises(ValueError, match=r"qa\[0\]: question"):
        items_from_records([{"answer": "A."}], "qa")
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match="b.jsonl, line 1: "):
        read_items(broken)
