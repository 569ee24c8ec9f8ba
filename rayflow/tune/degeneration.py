"""Signs that a preference-trained policy has degenerated: NaN training metrics, repetitive generations, and
generations that blow up in length compared with the starting (SFT) model. Plain Python, no Ray.

Too small a DPO β lets the policy drift far from its reference; on real models this shows up as NaN losses,
loops of repeated phrases and answers that run to the token limit (the RefDPO study reports such runs as
"degenerate"). Each check is a reason string so a report can say *why* a trial was flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def repetition_rate(token_ids: Sequence[int], n: int = 4) -> float:
    """Share of the sequence's n-grams that repeat an earlier n-gram of the same sequence, in [0, 1].

    0 for a sequence with no repeated n-gram (or shorter than n + 1 tokens); close to 1 for a loop such as
    "a b c a b c a b c ...". Counts token n-grams, so it works for any tokenizer and language.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def degeneration_reasons(
    *,
    train_metrics: Mapping[str, float],
    mean_length: float | None,
    baseline_mean_length: float | None,
    mean_repetition: float | None,
    baseline_mean_repetition: float | None = None,
    max_repetition: float = 0.5,
    max_length_ratio: float = 2.0,
) -> list[str]:
    """Why a trial counts as degenerate (empty list: it does not).

    - `nan`: any reported training/eval metric is NaN or infinite;
    - `repetition`: mean `repetition_rate` of its generations above `max_repetition` and above the SFT model's
      (`baseline_mean_repetition`): a starting model that already repeats that much is where training began, and
      flagging every trial for it would leave nothing to choose from;
    - `length`: mean generation length (tokens) above `max_length_ratio` times the SFT model's.
    Generation-based checks are skipped when their inputs are None (no evaluation stage).
    """
    reasons = []
    bad = sorted(k for k, v in train_metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        reasons.append(f"nan: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    if (
        mean_repetition is not None
        and mean_repetition > max_repetition
        and mean_repetition > (baseline_mean_repetition or 0.0)
    ):
        reasons.append(f"repetition: {mean_repetition:.2f} of n-grams repeated (> {max_repetition})")
    if mean_length is not None and baseline_mean_length:
        ratio = mean_length / baseline_mean_length
        if ratio > max_length_ratio:
            reasons.append(f"length: {ratio:.1f}x the SFT model's mean length (> {max_length_ratio}x)")
    return reasons
