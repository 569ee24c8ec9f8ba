"""How well a detector finds conflicts: per-class and per-type precision/recall/F1, accuracy per intensity.

`detector_metrics(rows)` takes pairs with gold `conflict`, `kind`, `type`, `intensity` and a prediction
`pred` (bool) and returns

    {"n", "accuracy",
     "classes": {"conflict": {precision, recall, f1, support}, "no_conflict": {...}},   # ECon's per-class
     "by_kind": {kind: {n, accuracy, precision, recall, f1}},                           # conflict positive
     "by_type": {type: {n, accuracy, precision, recall, f1}},   # pairs whose set has that type
     "by_intensity": {"negated:1": {n, accuracy}, ...}}         # factoid sets (all conflicting)

A fraction over an empty set is 0.0, never NaN. `plot_metrics` draws F1 per type and accuracy per intensity
for every detector in one PNG. Pure Python (matplotlib only for the plot).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def prf(gold: Sequence[bool], pred: Sequence[bool], positive: bool = True) -> dict[str, float]:
    """Precision, recall and F1 of class `positive`, plus its support (gold count) and the accuracy."""
    tp = sum(g == positive and p == positive for g, p in zip(gold, pred))
    predicted = sum(p == positive for p in pred)
    support = sum(g == positive for g in gold)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = _ratio(sum(g == p for g, p in zip(gold, pred)), len(gold))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "accuracy": accuracy}


def _group(rows: Iterable[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row.get(key) is not None:
            groups[str(row[key])].append(row)
    return dict(sorted(groups.items()))


def _conflict_prf(rows: list[dict]) -> dict[str, float]:
    m = prf([r["conflict"] for r in rows], [r["pred"] for r in rows])
    return {"n": len(rows), "accuracy": m["accuracy"], "precision": m["precision"], "recall": m["recall"],
            "f1": m["f1"]}  # fmt: skip


def detector_metrics(rows: Sequence[dict]) -> dict:
    """The metrics above for one detector's predictions (`pred`) on `rows`."""
    rows = list(rows)
    gold, pred = [r["conflict"] for r in rows], [r["pred"] for r in rows]
    classes = {}
    for name, positive in (("conflict", True), ("no_conflict", False)):
        m = prf(gold, pred, positive)
        classes[name] = {k: m[k] for k in ("precision", "recall", "f1", "support")}
    return {
        "n": len(rows),
        "accuracy": prf(gold, pred)["accuracy"],
        "classes": classes,
        "by_kind": {k: _conflict_prf(g) for k, g in _group(rows, "kind").items()},
        "by_type": {k: _conflict_prf(g) for k, g in _group(rows, "type").items()},
        "by_intensity": {
            k: {"n": len(g), "accuracy": _ratio(sum(r["conflict"] == r["pred"] for r in g), len(g))}
            for k, g in sorted(_group(rows, "intensity").items(), key=lambda kv: _intensity_order(kv[0]))
        },
    }


def _intensity_order(intensity: str) -> tuple[str, int]:
    name, _, level = intensity.partition(":")
    return name, int(level) if level.isdigit() else 0


def plot_metrics(path: str | Path, metrics: dict[str, dict]) -> None:
    """One PNG: conflict F1 per type (bars, one per detector) and accuracy per intensity (lines, one per
    detector and intensity family). `metrics` maps detector name -> `detector_metrics` output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    types = sorted({t for m in metrics.values() for t in m["by_type"]})
    width = 0.8 / max(1, len(metrics))
    for d, (name, m) in enumerate(metrics.items()):
        xs = [i + d * width for i in range(len(types))]
        left.bar(xs, [m["by_type"].get(t, {}).get("f1", 0.0) for t in types], width, label=name)
    left.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(types))], types)
    left.set_ylim(0, 1)
    left.set_title("conflict F1 per type")
    left.legend(fontsize=8)
    for name, m in metrics.items():
        for family, points in _group(
            [{"f": k.partition(":")[0], "k": k, **v} for k, v in m["by_intensity"].items()], "f"
        ).items():
            levels = [_intensity_order(p["k"])[1] for p in points]
            right.plot(levels, [p["accuracy"] for p in points], marker="o", label=f"{name} ({family})")
    right.set_ylim(0, 1.05)
    right.set_xlabel("k negated facts / j shared facts")
    right.set_title("accuracy per intensity (factoid sets)")
    if any(m["by_intensity"] for m in metrics.values()):
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
