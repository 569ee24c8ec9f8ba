"""RAGChecker items in and out: reading `{"results": [...]}` JSON, JSONL of items, or saved `/v1/query` answers,
and checking each item so a bad one becomes an error record naming its field, never a failed run.

An item is `{query_id, query, gt_answer, response, retrieved_context: [{doc_id?, text}]}`, optionally with
claims (`response_claims`, `gt_answer_claims`) and labels already computed (kept, not recomputed). A research
assistant's `/v1/query` answer has the same fields (plus `citations`, kept as is); without `gt_answer` it can
only be scored on metrics that need no ground truth (faithfulness).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rayflow.eval.ragchecker.metrics import LABEL_FIELDS, LABELS, required_labels
from rayflow.jsonl import loads_object

ERROR_PREVIEW_CHARS = 500
# Labels whose check reads the ground-truth answer or its claims.
GT_LABELS = ("answer2response", "response2answer", "retrieved2answer")


def check_item(obj: Any, metrics: Sequence[str], default_id: str) -> tuple[dict | None, str | None]:
    """A validated copy of one item, or the reason it cannot be evaluated for `metrics` (naming the field)."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    item = dict(obj)
    item["query_id"] = str(item["query_id"]) if item.get("query_id") is not None else default_id
    for name in ("query", "response"):
        if not isinstance(item.get(name), str):
            return None, f"{name}: must be a string" + (" (missing)" if name not in item else "")
    if not item["query"].strip():
        return None, "query: is empty"
    needed = required_labels(metrics)
    needs_gt = [f for f in needed if f in GT_LABELS and item.get(f) is None]
    if item.get("gt_answer") is None and needs_gt:
        return None, f"gt_answer: missing (the labels {needs_gt} need a ground-truth answer)"
    if item.get("gt_answer") is not None and not isinstance(item["gt_answer"], str):
        return None, "gt_answer: must be a string"
    context = item.get("retrieved_context", [])
    if not isinstance(context, list):
        return None, "retrieved_context: must be a list of {doc_id?, text}"
    chunks = []
    for j, chunk in enumerate(context):
        chunk = {"text": chunk} if isinstance(chunk, str) else chunk
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            return None, f"retrieved_context[{j}].text: must be a string"
        chunks.append(chunk)
    item["retrieved_context"] = chunks
    for name in ("response_claims", "gt_answer_claims"):
        claims = item.get(name)
        if claims is not None and not (isinstance(claims, list) and all(map(_is_claim, claims))):
            return None, f"{name}: must be a list of claims (triplet lists or strings)"
    for field in LABEL_FIELDS:
        problem = _check_labels(item, field)
        if problem:
            return None, problem
    return item, None


def _is_claim(claim: Any) -> bool:
    return isinstance(claim, str) or (isinstance(claim, list) and all(isinstance(p, str) for p in claim))


def _check_labels(item: dict, field: str) -> str | None:
    labels = item.get(field)
    if labels is None:
        return None
    per_chunk = field.startswith("retrieved")
    rows = labels if per_chunk else [labels]
    if not isinstance(labels, list) or (per_chunk and not all(isinstance(r, list) for r in rows)):
        shape = "a list (per claim) of lists (per chunk)" if per_chunk else "a list (one per claim)"
        return f"{field}: must be {shape} of labels"
    for row in rows:
        bad = next((x for x in row if x not in LABELS), None)
        if bad is not None:
            return f"{field}: label {bad!r} is not one of {list(LABELS)}"
        if per_chunk and len(row) != len(item["retrieved_context"]):
            return f"{field}: {len(row)} labels in a claim's row for {len(item['retrieved_context'])} chunks"
    return None


def _records(path: Path) -> list[tuple[str, Any | None, str | None]]:
    """(where, object or None, reason) for every item a file holds, in order."""
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                obj, error = loads_object(line)
                out.append((f"{path.name}:{number}", obj, error))
        return out
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return [(path.name, None, f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}")]
    results = data.get("results") if isinstance(data, dict) else data
    if not isinstance(results, list):
        return [(path.name, None, 'expected {"results": [...]} or a JSON list of items')]
    return [(f"{path.name}:results[{i}]", obj, None) for i, obj in enumerate(results)]


def read_items(path: str, metrics: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Items and error records `{where, query_id, reason, raw}` of a file or a directory of `*.json[l]`."""
    source = Path(path)
    files = sorted([*source.glob("*.json"), *source.glob("*.jsonl")]) if source.is_dir() else [source]
    items, errors = [], []
    for file in files:
        for where, obj, reason in _records(file):
            item = None
            if reason is None:
                item, reason = check_item(obj, metrics, default_id=where)
            if item is None:
                qid = obj.get("query_id") if isinstance(obj, dict) else None
                raw = json.dumps(obj, ensure_ascii=False)[:ERROR_PREVIEW_CHARS] if obj is not None else None
                errors.append({"where": where, "query_id": qid, "reason": reason, "raw": raw})
            else:
                items.append(item)
    return items, errors
