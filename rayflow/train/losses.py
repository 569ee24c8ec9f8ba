"""Preference losses: the DPO family and WSPO. Pure torch, no Ray; every function is per example.

Notation: s(y|x) is a summed response log-prob (prompt and padding masked, fp32); the DPO logit is
h = (s_θ(y_w) - s_ref(y_w)) - (s_θ(y_l) - s_ref(y_l)).

Reference-free objectives are choices of *reference*, not of loss: "posterior" passes zeros as the reference
log-probs (h = s_θ(y_w) - s_θ(y_l)); "likelihood" passes the SFT model's log-prob of each response with the
prompt removed. The trainer (`rayflow.train.preference`) selects them from its config.

IPO length convention: `dpo_loss` uses the log-ratios exactly as given. The trainer passes summed log-probs by
default (as OpenRLHF does) and per-token means when `ipo_length_normalize` is on (as TRL does).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

DPOLossType = Literal["sigmoid", "hinge", "ipo", "robust"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-example DPO-family loss, shape [B], from log-probs of shape [B].

    With h as above and ε = `label_smoothing`:
    - `sigmoid`: -(1-ε)·log σ(βh) - ε·log σ(-βh)  (DPO at ε = 0, conservative DPO otherwise; 0 <= ε <= 0.5)
    - `hinge`:   relu(1 - βh)
    - `ipo`:     (h - 1/(2β))²
    - `robust`:  [-(1-ε)·log σ(βh) + ε·log σ(-βh)] / (1-2ε)  (0 <= ε < 0.5)
    `label_smoothing` applies to `sigmoid` and `robust` only; a non-zero value with another type raises.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if loss_type not in ("sigmoid", "hinge", "ipo", "robust"):
        raise ValueError(f"unknown loss_type {loss_type!r}; choose sigmoid, hinge, ipo or robust")
    eps = float(label_smoothing)
    if loss_type in ("hinge", "ipo") and eps != 0.0:
        raise ValueError(f"label_smoothing applies to sigmoid and robust only, not {loss_type!r}")
    if loss_type == "sigmoid" and not 0.0 <= eps <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5] for sigmoid, got {eps}")
    if loss_type == "robust" and not 0.0 <= eps < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5) for robust, got {eps}")
    h = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if loss_type == "sigmoid":
        return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    if loss_type == "hinge":
        return torch.relu(1 - beta * h)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    return (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)


def dpo_logits(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
) -> torch.Tensor:
    """h = (π_c - r_c) - (π_r - r_r), shape [B], computed in fp32."""
    return (policy_chosen_logps.float() - ref_chosen_logps.float()) - (
        policy_rejected_logps.float() - ref_rejected_logps.float()
    )


def dpo_metrics(
    policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, beta: float
) -> dict[str, torch.Tensor]:
    """Per-example metrics named like TRL's, each shape [B] and detached.

    rewards/chosen = β(π_c - r_c), rewards/rejected = β(π_r - r_r), rewards/margins = their difference,
    rewards/accuracies = 1 where chosen reward > rejected reward (strict, so 0 when policy = reference),
    logps/chosen and logps/rejected = policy log-probs, and `h` = the raw margin, comparable across β.
    """
    with torch.no_grad():
        chosen = beta * (policy_chosen_logps.float() - ref_chosen_logps.float())
        rejected = beta * (policy_rejected_logps.float() - ref_rejected_logps.float())
        return {
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "rewards/margins": chosen - rejected,
            "rewards/accuracies": (chosen > rejected).float(),
            "logps/chosen": policy_chosen_logps.detach().float(),
            "logps/rejected": policy_rejected_logps.detach().float(),
            "h": dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps),
        }


def wspo_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    weak_aligned_logps: torch.Tensor,
    weak_base_logps: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    form: Literal["token", "sequence"] = "token",
) -> torch.Tensor:
    """Per-example WSPO loss, shape [B], from per-token log-probs [B, T] aligned with a response mask [B, T].

    With Δs_t = ℓθ_t - ℓref_t (strong policy vs strong reference) and Δw_t = ℓwa_t - ℓwb_t (weak aligned vs
    weak base), over the response tokens t of each row:
    - `token` (the official code): mean_t (γ·Δs_t - Δw_t)²
    - `sequence` (the paper's port): (γ·mean_t Δs_t - mean_t Δw_t)²
    A row whose mask is empty has loss 0 (and no gradient). Masked positions may hold anything, even NaN.
    The fixed point is Δs = Δw/γ, so γ < 1 amplifies the weak model's shift.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if form not in ("token", "sequence"):
        raise ValueError(f"unknown WSPO form {form!r}; choose token or sequence")
    m = mask.bool()
    n = m.sum(-1)
    zero = torch.zeros((), dtype=torch.float32, device=policy_logps.device)
    delta_s = torch.where(m, policy_logps.float() - ref_logps.float(), zero)
    delta_w = torch.where(m, weak_aligned_logps.float() - weak_base_logps.float(), zero)
    denom = n.clamp(min=1).float()
    if form == "token":
        per_token = torch.where(m, (gamma * delta_s - delta_w) ** 2, zero)
        return per_token.sum(-1) / denom
    return (gamma * delta_s.sum(-1) / denom - delta_w.sum(-1) / denom) ** 2


def wspo_metrics(
    policy_logps, ref_logps, weak_aligned_logps, weak_base_logps, mask, *, gamma: float
) -> dict[str, torch.Tensor]:
    """Per-example WSPO diagnostics [B]: mean Δs and Δw per response token, and γ·Δs - Δw (0 at the optimum)."""
    with torch.no_grad():
        m = mask.bool()
        denom = m.sum(-1).clamp(min=1).float()
        zero = torch.zeros((), dtype=torch.float32, device=policy_logps.device)
        delta_s = torch.where(m, policy_logps.float() - ref_logps.float(), zero).sum(-1) / denom
        delta_w = torch.where(m, weak_aligned_logps.float() - weak_base_logps.float(), zero).sum(-1) / denom
        return {
            "wspo/delta_strong": delta_s,
            "wspo/delta_weak": delta_w,
            "wspo/scaled_gap": gamma * delta_s - delta_w,
        }
