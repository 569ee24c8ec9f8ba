"""Session scores from graded turns: professionalism, stability, dynamism and overall, per item and per session.

With s_t the criterion fulfilment of turn t (mean of its graded points, in [0, 1]; ungraded turns left out):

    professionalism = mean_t s_t
    stability       = mean over challenge/clarify turns t of (1 - |s_t - s_{t-1}|)      (None: no such turn)
    dynamism        = clip(1 + slope of s_t on depth_t, 0, 1)                          (None: < 2 depths)
                      depth_t = follow_up/deepen turns since the item's start or its last switch_topic
    overall         = mean of those that are not None

A session's scores are the means of its items' (each over the items where it is defined). Plain Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCORES = ("professionalism", "stability", "dynamism", "overall")


def depths(types: Sequence[str]) -> list[int]:
    """depth_t for each turn's type."""
    out, depth = [], 0
    for t in types:
        depth = depth + 1 if t in ("follow_up", "deepen") else (0 if t == "switch_topic" else depth)
        out.append(depth)
    return out


def item_scores(turns: Sequence[dict]) -> dict[str, float | None]:
    """The four scores of one item's turns (records with `type` and `score`, in turn order)."""
    graded = [(t["type"], t["score"], d) for t, d in zip(turns, depths([t["type"] for t in turns]))
              if t.get("score") is not None]  # fmt: skip
    if not graded:
        return dict.fromkeys(SCORES)
    scores = [s for _, s, _ in graded]
    pressed = [1 - abs(s - graded[i - 1][1]) for i, (t, s, _) in enumerate(graded)
               if i > 0 and t in ("challenge", "clarify")]  # fmt: skip
    depth = np.array([d for _, _, d in graded], dtype=float)
    dynamism = None
    if len(set(depth)) >= 2:
        slope = float(np.polyfit(depth, np.array(scores), 1)[0])
        dynamism = float(np.clip(1 + slope, 0, 1))
    out = {"professionalism": float(np.mean(scores)), "stability": float(np.mean(pressed)) if pressed else None,
           "dynamism": dynamism}  # fmt: skip
    return {**out, "overall": _mean([v for v in out.values() if v is not None])}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def session_scores(turns: Sequence[dict]) -> dict:
    """{professionalism, stability, dynamism, overall, items: {item_id: scores}, turns, graded, parse_failures}."""
    by_item: dict[str, list[dict]] = {}
    for t in turns:
        by_item.setdefault(t["item_id"], []).append(t)
    items = {k: item_scores(v) for k, v in by_item.items()}
    out = {name: _mean([s[name] for s in items.values() if s[name] is not None]) for name in SCORES[:3]}
    out["overall"] = _mean([v for v in out.values() if v is not None])
    return {**out, "items": items, "turns": len(turns),
            "graded": sum(t.get("score") is not None for t in turns),
            "parse_failures": sum(not t.get("parse_ok", True) for t in turns)}  # fmt: skip
