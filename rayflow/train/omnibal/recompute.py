"""Per-stage recompute: plan the least recomputation that fits memory, and apply it with torch.utils.checkpoint.

Under 1F1B, stage s of P holds the saved activations of up to min(P - s, m) micro-batches at once, so the
first stages need the most memory, and a global policy (DeepSpeed's one ``activation_checkpoint_interval``,
Megatron's one ``recompute_num_layers``) must size every stage for the worst one. With ISF every group is
bounded by (Q_v, Q_t), so each stage's peak is predictable and each can choose its own policy.

Per layer the choices are ``none``, ``selective`` (re-run the MLP in backward) and ``full`` (keep only the
input, re-run the layer). A stage's options are full recompute on some of its layers with the others
either all ``none`` or all ``selective``; the planner takes the option with the least recompute time
such that

    state bytes + in-flight x saved bytes per micro-batch + largest re-materialised layer <= budget.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["Recomputed", "StagePlan", "plan_stage", "recompute_seconds"]


@dataclass(frozen=True)
class StagePlan:
    """Recompute mode per layer of one stage, its predicted peak bytes and whether that fits the budget."""

    modes: tuple[str, ...]
    peak_bytes: float
    fits: bool
    extra_seconds: float  # recompute time per micro-batch at the sizing workload


def plan_stage(
    *,
    fwd: np.ndarray,
    act: dict[str, np.ndarray],
    selective_frac: np.ndarray,
    params: np.ndarray,
    inflight: int,
    state_bytes_per_param: float,
    budget: float,
    policy: str = "plan",
) -> StagePlan:
    """Plan one stage of n layers, sized for one micro-batch at its bound (e.g. Q_v tiles, Q_t tokens).

    ``fwd``: [n] forward seconds; ``act``: mode -> [n] saved bytes; ``selective_frac``: [n] share of the
    forward re-run by selective recompute; ``params``: [n]; ``inflight``: micro-batches held at once;
    ``budget``: bytes available on the device. ``policy``: ``plan`` chooses; ``full`` or ``none`` applies
    that mode to every layer (the global policies, for comparison). When nothing fits, ``plan`` returns
    full recompute with ``fits=False``.

    The choice is exact within its family (some layers full, the rest all ``none`` or all ``selective``):
    identical layers (a stage is mostly copies of one block) are interchangeable, so the search runs over
    how many layers of each distinct kind are fully recomputed, solving the largest kind's count directly.
    """
    n = len(fwd)
    state = float(params.sum() * state_bytes_per_param)
    if policy != "plan":
        return _evaluate((policy,) * n, fwd, act, selective_frac, state, inflight, budget)
    kinds: dict[tuple, list[int]] = {}
    for i in range(n):
        sig = (fwd[i], act["none"][i], act["selective"][i], act["full"][i], selective_frac[i])
        kinds.setdefault(sig, []).append(i)
    members = sorted(kinds.values(), key=len)
    solved, others = members[-1], members[:-1]
    best: tuple[float, tuple[str, ...]] | None = None
    for rest in ("none", "selective"):
        for counts in itertools.product(*(range(len(m) + 1) for m in others)):
            modes = np.full(n, rest, dtype=object)
            for m, c in zip(others, counts):
                modes[m[:c]] = "full"
            c_last = _least_full(modes, solved, fwd, act, state, inflight, budget)
            if c_last is None:
                continue
            modes[solved[:c_last]] = "full"
            extra = _extra(tuple(modes), fwd, selective_frac)
            if best is None or extra < best[0] - 1e-15:
                best = (extra, tuple(modes))
    if best is None:
        return _evaluate(("full",) * n, fwd, act, selective_frac, state, inflight, budget)
    return _evaluate(best[1], fwd, act, selective_frac, state, inflight, budget)


def _peak(
    modes: tuple[str, ...] | np.ndarray, act: dict[str, np.ndarray], state: float, inflight: int
) -> float:
    kept = np.array([act[m][i] for i, m in enumerate(modes)])
    rematerialised = act["none"] - kept
    return float(state + inflight * kept.sum() + (rematerialised.max() if len(kept) else 0.0))


def _least_full(
    modes: np.ndarray,
    layers: list[int],
    fwd: np.ndarray,
    act: dict[str, np.ndarray],
    state: float,
    inflight: int,
    budget: float,
) -> int | None:
    """Fewest of ``layers`` (identical) to switch to full recompute so the stage fits; None if none does."""
    lo, hi = 0, len(layers)
    trial = modes.copy()
    trial[layers] = "full"
    if _peak(trial, act, state, inflight) > budget:
        return None
    # Peak bytes fall monotonically with each extra full layer once one is full, so bisect on the count.
    while lo < hi:
        mid = (lo + hi) // 2
        trial = modes.copy()
        trial[layers[:mid]] = "full"
        if _peak(trial, act, state, inflight) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _extra(modes: tuple[str, ...], fwd: np.ndarray, selective_frac: np.ndarray) -> float:
    return float(
        sum(
            fwd[i] * (1.0 if m == "full" else selective_frac[i] if m == "selective" else 0.0)
            for i, m in enumerate(modes)
        )
    )


def _evaluate(
    modes: tuple[str, ...],
    fwd: np.ndarray,
    act: dict[str, np.ndarray],
    selective_frac: np.ndarray,
    state: float,
    inflight: int,
    budget: float,
) -> StagePlan:
    peak = _peak(modes, act, state, inflight)
    return StagePlan(
        modes=tuple(modes),
        peak_bytes=peak,
        fits=bool(peak <= budget),
        extra_seconds=_extra(tuple(modes), fwd, selective_frac),
    )


def recompute_seconds(modes: tuple[str, ...], fwd: np.ndarray, selective_frac: np.ndarray) -> np.ndarray:
    """Extra backward seconds per micro-batch: ``fwd`` [n, G] of the stage's layers -> [G]."""
    weight = np.array(
        [1.0 if m == "full" else f if m == "selective" else 0.0 for m, f in zip(modes, selective_frac)]
    )
    return weight @ fwd


class Recomputed(nn.Module):
    """A layer run under its recompute mode.

    ``full`` wraps the call in non-reentrant ``torch.utils.checkpoint`` (the reentrant variant needs an
    input that requires grad, which the first stage's integer inputs do not); ``selective`` asks the layer
    to checkpoint its own MLP (layers that support it have a ``selective_recompute`` flag).
    """

    def __init__(self, layer: nn.Module, mode: str) -> None:
        super().__init__()
        if mode == "selective" and not hasattr(layer, "selective_recompute"):
            raise ValueError(f"{type(layer).__name__} has no selective recompute")
        self.layer, self.mode = layer, mode
        if mode == "selective":
            layer.selective_recompute = True

    def forward(self, inputs):
        if self.mode == "full" and torch.is_grad_enabled():
            return checkpoint(self.layer, inputs, use_reentrant=False)
        return self.layer(inputs)
