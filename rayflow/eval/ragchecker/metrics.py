"""RAGChecker's 11 claim-level metrics from claim labels: plain Python (numpy only for the final means).

A result is one item of RAGChecker's JSON carrying its labels (each "Entailment", "Neutral" or
"Contradiction"; only Entailment counts as true):

    answer2response     one label per response claim: is it entailed by the ground truth?
    response2answer     one label per ground-truth claim: is it entailed by the response?
    retrieved2response  per response claim, one label per retrieved chunk
    retrieved2answer    per ground-truth claim, one label per retrieved chunk

With m response claims, g ground-truth claims and C chunks, per query: precision and recall are the entailed
fractions of m and g; claim_recall the fraction of g entailed by some chunk; context_precision the fraction of
chunks entailing some ground-truth claim (a "relevant" chunk); context_utilization, among ground-truth claims
some chunk entails, the fraction the response also entails. Over m: faithfulness = entailed by some chunk;
hallucination = entailed by no chunk and not by the ground truth; self_knowledge = entailed by no chunk but by
the ground truth; noise_sensitivity_in_relevant = entailed by a relevant chunk and not by the ground truth;
noise_sensitivity_in_irrelevant = entailed by an irrelevant chunk only and not by the ground truth.

Edge cases follow RAGChecker's computation: a fraction over an empty set is 0, never NaN; with no chunks the
eight chunk-based metrics are 0; with no ground-truth claims both noise sensitivities are 0. Each metric is
averaged over queries, x100, rounded to 1 decimal; f1 is computed per query (0 unless precision and recall are
both > 0) and then averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

ENTAILMENT, NEUTRAL, CONTRADICTION = "Entailment", "Neutral", "Contradiction"
LABELS = (ENTAILMENT, NEUTRAL, CONTRADICTION)
LABEL_FIELDS = ("answer2response", "response2answer", "retrieved2response", "retrieved2answer")

METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "overall_metrics": ("precision", "recall", "f1"),
    "retriever_metrics": ("claim_recall", "context_precision"),
    "generator_metrics": (
        "context_utilization",
        "noise_sensitivity_in_relevant",
        "noise_sensitivity_in_irrelevant",
        "hallucination",
        "self_knowledge",
        "faithfulness",
    ),
}
ALL_METRICS = tuple(m for group in METRIC_GROUPS.values() for m in group)
# The labels each metric is computed from (RAGChecker's requirements: only these checks run for it).
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "precision": ("answer2response",),
    "recall": ("response2answer",),
    "f1": ("answer2response", "response2answer"),
    "claim_recall": ("retrieved2answer",),
    "context_precision": ("retrieved2answer",),
    "context_utilization": ("retrieved2answer", "response2answer"),
    "noise_sensitivity_in_relevant": ("retrieved2response", "answer2response", "retrieved2answer"),
    "noise_sensitivity_in_irrelevant": ("retrieved2response", "answer2response", "retrieved2answer"),
    "hallucination": ("retrieved2response", "answer2response"),
    "self_knowledge": ("retrieved2response", "answer2response"),
    "faithfulness": ("retrieved2response",),
}


def select_metrics(names: str | Iterable[str] = "all_metrics") -> tuple[str, ...]:
    """Metric names from group names (`all_metrics`, `overall_metrics`, ...) and/or metric names, in the
    canonical order. Raises ValueError naming an unknown one."""
    wanted: set[str] = set()
    for name in [names] if isinstance(names, str) else names:
        if name == "all_metrics":
            wanted.update(ALL_METRICS)
        elif name in METRIC_GROUPS:
            wanted.update(METRIC_GROUPS[name])
        elif name in REQUIREMENTS:
            wanted.add(name)
        else:
            choices = ["all_metrics", *METRIC_GROUPS, *ALL_METRICS]
            raise ValueError(f"metrics: unknown metric {name!r}; choose from {choices}")
    return tuple(m for m in ALL_METRICS if m in wanted)


def required_labels(metrics: Iterable[str]) -> tuple[str, ...]:
    """The label fields the given metric names need, in LABEL_FIELDS order."""
    needed = {field for m in metrics for field in REQUIREMENTS[m]}
    return tuple(f for f in LABEL_FIELDS if f in needed)


def _flags(labels: Sequence[str]) -> list[bool]:
    return [label == ENTAILMENT for label in labels]


def _grid(rows: Sequence[Sequence[str]]) -> list[list[bool]]:
    return [_flags(row) for row in rows]


def _frac(count: int, total: int) -> float:
    return count / total if total else 0.0


def item_metrics(result: dict[str, Any], metrics: Iterable[str] = ALL_METRICS) -> dict[str, float]:
    """One query's metrics as fractions in [0, 1] (not x100), keyed by metric name.

    Needs the label fields of `required_labels(metrics)`; raises ValueError naming a missing one.
    """
    metrics = tuple(metrics)
    for field in required_labels(metrics):
        if result.get(field) is None:
            raise ValueError(
                f"{field}: missing label field (needed for {', '.join(_needing(field, metrics))})"
            )
    a2r = _flags(result.get("answer2response") or [])  # response claims entailed by the ground truth
    r2a = _flags(result.get("response2answer") or [])  # ground-truth claims entailed by the response
    ret2resp = _grid(result.get("retrieved2response") or [])  # response claim x chunk
    ret2ans = _grid(result.get("retrieved2answer") or [])  # ground-truth claim x chunk
    # Chunks are counted from the first claim's row, as RAGChecker does: no claims means no chunk labels.
    chunks_a = len(ret2ans[0]) if ret2ans else 0
    chunks_r = len(ret2resp[0]) if ret2resp else 0
    out: dict[str, float] = {}

    precision = _frac(sum(a2r), len(a2r))
    recall = _frac(sum(r2a), len(r2a))
    out["precision"], out["recall"] = precision, recall
    out["f1"] = 2 * precision * recall / (precision + recall) if precision > 0 and recall > 0 else 0.0

    recalled = [any(row) for row in ret2ans]  # ground-truth claim entailed by some chunk
    relevant = [any(row[j] for row in ret2ans) for j in range(chunks_a)]  # chunk entails some gt claim
    out["claim_recall"] = _frac(sum(recalled), len(recalled)) if chunks_a else 0.0
    out["context_precision"] = _frac(sum(relevant), chunks_a)
    used = sum(rec and ent for rec, ent in zip(recalled, r2a)) if chunks_a else 0
    out["context_utilization"] = _frac(used, sum(recalled)) if chunks_a else 0.0

    if a2r and chunks_r and ret2ans:
        # A chunk's relevance comes from the ground-truth labels; with no chunk labels there (no gt claims
        # with chunks) nothing is relevant.
        rel = [relevant[j] if j < len(relevant) else False for j in range(chunks_r)]
        in_relevant = [any(row[j] and rel[j] for j in range(chunks_r)) for row in ret2resp]
        in_irrelevant = [
            any(row[j] and not rel[j] for j in range(chunks_r)) and not r
            for row, r in zip(ret2resp, in_relevant)
        ]
        wrong = [not ok for ok in a2r]
        out["noise_sensitivity_in_relevant"] = _frac(
            sum(r and w for r, w in zip(in_relevant, wrong)), len(a2r)
        )
        out["noise_sensitivity_in_irrelevant"] = _frac(
            sum(i and w for i, w in zip(in_irrelevant, wrong)), len(a2r)
        )
    else:
        out["noise_sensitivity_in_relevant"] = out["noise_sensitivity_in_irrelevant"] = 0.0

    if chunks_r:
        faithful = [any(row) for row in ret2resp]
        m = len(ret2resp)
        out["hallucination"] = _frac(sum(not f and not ok for f, ok in zip(faithful, a2r)), m)
        out["self_knowledge"] = _frac(sum(not f and ok for f, ok in zip(faithful, a2r)), m)
        out["faithfulness"] = _frac(sum(faithful), m)
    else:
        out["hallucination"] = out["self_knowledge"] = out["faithfulness"] = 0.0
    return {name: float(out[name]) for name in metrics}


def _needing(field: str, metrics: Sequence[str]) -> list[str]:
    return [m for m in metrics if field in REQUIREMENTS[m]]


def aggregate(per_item: Sequence[dict[str, float]], metrics: Iterable[str] = ALL_METRICS) -> dict:
    """Per-query fractions -> RAGChecker's grouped metrics: mean x100, rounded to 1 decimal (0.0 with no
    queries). Groups always appear; each holds the requested metrics only."""
    metrics = set(metrics)
    grouped: dict[str, dict[str, float]] = {}
    for group, names in METRIC_GROUPS.items():
        grouped[group] = {}
        for name in names:
            if name in metrics:
                values = [item[name] for item in per_item]
                # np.mean then round(.., 1), as RAGChecker aggregates: the same float at every .x5 boundary.
                grouped[group][name] = float(round(np.mean(values) * 100, 1)) if values else 0.0
    return grouped


def compute_metrics(results: list[dict], metrics: str | Iterable[str] = "all_metrics") -> dict:
    """RAGChecker's metrics over labelled results: `{overall_metrics: {precision, recall, f1},
    retriever_metrics: {claim_recall, context_precision}, generator_metrics: {context_utilization,
    noise_sensitivity_in_relevant, noise_sensitivity_in_irrelevant, hallucination, self_knowledge,
    faithfulness}}`, each value a percentage rounded to 1 decimal.

    `metrics` narrows the computation (group or metric names) and with it the labels needed. The input is
    not changed. Raises ValueError naming the result index and the missing label field.
    """
    names = select_metrics(metrics)
    per_item = []
    for i, result in enumerate(results):
        if not isinstance(result, dict):
            raise TypeError(f"results[{i}]: expected an object, got {type(result).__name__}")
        try:
            per_item.append(item_metrics(result, names))
        except ValueError as err:
            raise ValueError(f"results[{i}].{err}") from None
    return aggregate(per_item, names)
