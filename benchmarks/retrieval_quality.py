"""Retrieval quality on the shipped QA set: recall@5 of hybrid (candidate) vs dense (baseline), and sparse.

The 300 papers of `examples/papers` are indexed with the default `IndexConfig` (128-word chunks, offline
all-MiniLM-L6-v2, exact Flat search, BM25, RRF k=60 over the best 50 of each list); for each of the 80
questions, recall@5 is 1 when one of its gold chunks is among the 5 chunks returned. Per question kind (the
method named, or only described) the JSON splits the figures. Run: `python benchmarks/retrieval_quality.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.retrieval import IndexConfig, Retriever

REPO = Path(__file__).resolve().parents[1]
K = 5


def main() -> None:
    papers = [json.loads(line) for line in (REPO / "examples/papers/papers.jsonl").open()]
    questions = [json.loads(line) for line in (REPO / "examples/papers/qa.jsonl").open()]
    retriever = Retriever.empty(IndexConfig())
    retriever.add_documents(papers)
    scores: dict[str, dict[str, list[int]]] = {}
    for q in questions:
        # Questions naming the method ("What ... does X reach", "How does X perform") vs describing it.
        kind = "names_method" if q["query"].startswith(("What ", "How does ")) else "describes_method"
        for mode in ("dense", "sparse", "hybrid"):
            found = {h.chunk_id for h in retriever.search(q["query"], K, mode)}
            hit = int(bool(found & set(q["gold_chunk_ids"])))
            scores.setdefault(mode, {}).setdefault("all", []).append(hit)
            scores[mode].setdefault(kind, []).append(hit)
    recall = {
        mode: {k: round(sum(v) / len(v), 4) for k, v in parts.items()} for mode, parts in scores.items()
    }
    detail = {"questions": len(questions), "chunks": len(retriever), "k": K}
    path = write_result(
        "retrieval_quality",
        {"label": "hybrid (RRF of dense + BM25)", "value": recall["hybrid"]["all"], "by_kind": recall["hybrid"],
         "sparse": recall["sparse"], **detail},
        {"label": "dense (all-MiniLM-L6-v2, exact)", "value": recall["dense"]["all"], "by_kind": recall["dense"]},
        unit=f"recall@{K}",
        higher_is_better=True,
    )  # fmt: skip
    print(json.dumps(recall, indent=1), "->", path)


if __name__ == "__main__":
    main()
