"""Response log-probs of a causal LM: padding, one forward, fp32 gather. Pure torch, no Ray.

A sequence is `prompt_ids + response_ids`. Position t of the model's output predicts token t+1, so per-token
tensors have width T-1 and `loss_mask[:, t]` is 1 where token t+1 is a response token: prompt and padding are
masked. Position ids come from the attention mask, so left and right padding give the same log-probs (the
engine layer's `score` uses the same boundary, which is what lets precomputed reference log-probs stand in for a
resident reference model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Pair = tuple[Sequence[int], Sequence[int]]


def collate(
    pairs: Sequence[Pair], pad_id: int, *, side: Literal["right", "left"] = "right"
) -> dict[str, torch.Tensor]:
    """Pad (prompt_ids, response_ids) pairs into one batch.

    Returns `input_ids`, `attention_mask`, `position_ids` of shape [B, T] (long) and `loss_mask` of shape
    [B, T-1] (bool), T = the longest prompt + response.
    """
    width = max(len(p) + len(r) for p, r in pairs)
    ids, attn, resp = [], [], []
    for prompt, response in pairs:
        seq = list(prompt) + list(response)
        n_pad = width - len(seq)
        is_resp = [0] * len(prompt) + [1] * len(response)
        if side == "right":
            ids.append(seq + [pad_id] * n_pad)
            attn.append([1] * len(seq) + [0] * n_pad)
            resp.append(is_resp + [0] * n_pad)
        else:
            ids.append([pad_id] * n_pad + seq)
            attn.append([0] * n_pad + [1] * len(seq))
            resp.append([0] * n_pad + is_resp)
    attention_mask = torch.tensor(attn, dtype=torch.long)
    # Padding positions get position 0; they are masked out of attention and of the loss.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "loss_mask": torch.tensor(resp, dtype=torch.bool)[:, 1:],
    }


def token_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token log-probs [B, T-1] (fp32, nats) of `input_ids[:, 1:]`; masked positions are set to 0."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
    ).logits[:, :-1]
    labels = batch["input_ids"][:, 1:]
    # cross_entropy upcasts one [B*T, V] slab instead of materialising log_softmax and a gather separately.
    logps = -torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
    ).view(labels.shape)
    return torch.where(batch["loss_mask"], logps, torch.zeros((), dtype=logps.dtype, device=logps.device))


def sequence_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed response log-probs [B] (fp32)."""
    return token_logps(model, batch).sum(-1)


def collate_preference(
    prompts: Sequence[Sequence[int]],
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
    pad_id: int,
    *,
    side: Literal["right", "left"] = "right",
) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows in one padded batch of 2B rows, for a single concatenated forward."""
    pairs = [(p, c) for p, c in zip(prompts, chosen)] + [(p, r) for p, r in zip(prompts, rejected)]
    return collate(pairs, pad_id, side=side)


def split_pair(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo `collate_preference`'s concatenation along the batch dimension: (chosen, rejected)."""
    half = values.shape[0] // 2
    return values[:half], values[half:]
