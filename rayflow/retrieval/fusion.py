"""Reciprocal rank fusion (Cormack et al., 2009): merge rankings by each list's own ranks.

    rrf_fuse([["a", "b"], ["b", "c"]])            # [("b", 1/62 + 1/61), ("a", 1/61), ("c", 1/62)]

score(d) = sum over the lists that contain d of w_i / (k + rank_i(d)), ranks counted from 1 in each list on its
own (never by position in lists zipped together, which misranks lists of different lengths).
"""

from __future__ import annotations

import math


def rrf_fuse(
    rankings: list[list[str]], k: int = 60, weights: list[float] | None = None
) -> list[tuple[str, float]]:
    """Fuse `rankings` (each a list of ids, best first) into one `[(id, score)]` list.

    score(d) = sum over the lists i that contain d of w_i / (k + rank_i(d)), rank_i counted from 1; w_i = 1 when
    `weights` is None. Sorted by score descending, ties by id ascending. An empty list contributes nothing;
    an id listed twice in one list counts once, at its best rank. Raises `ValueError` when `weights` does
    not have one weight per list.
    """
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"weights has {len(weights)} entries for {len(rankings)} rankings")
    parts: dict[str, list[float]] = {}
    for i, ranking in enumerate(rankings):
        w = 1.0 if weights is None else float(weights[i])
        seen: set[str] = set()
        for rank, doc in enumerate(ranking, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            parts.setdefault(doc, []).append(w / (k + rank))
    # fsum is exact, so a score does not depend on the order of the lists (symmetric ties stay ties).
    scores = {doc: math.fsum(terms) for doc, terms in parts.items()}
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
