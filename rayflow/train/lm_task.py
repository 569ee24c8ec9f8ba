"""A `TrainTask` over in-memory rows for a Hugging Face causal LM: the base of the SFT, DPO and WSPO tasks.

Rows are plain dicts of token ids and precomputed floats; they travel to the workers with the task, so keep
them to what training needs. Subclasses turn a list of rows into a batch (`make_batch`) and define the loss.
"""

from __future__ import annotations

from typing import Any

import torch

from rayflow.train.loop import LazyBatches, TrainTask, eval_shard, shard_indices


class CausalLMTask(TrainTask):
    def __init__(
        self,
        model_path: str,
        pad_id: int,
        train_rows: list[dict[str, Any]],
        eval_rows: list[dict[str, Any]],
        *,
        seed: int = 0,
    ):
        self.model_path = model_path
        self.tokenizer_dir = model_path
        self.pad_id = pad_id
        self.train_rows = train_rows
        self.eval_rows = eval_rows
        self.seed = seed

    def build_model(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)

    def make_batch(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_batches(self, epoch: int, rank: int, world_size: int, micro_batch_size: int) -> LazyBatches:
        shards = shard_indices(
            len(self.train_rows), epoch, rank, world_size, micro_batch_size, seed=self.seed
        )
        return LazyBatches(shards, lambda idx: self.make_batch([self.train_rows[i] for i in idx]))

    def eval_batches(self, rank: int, world_size: int, micro_batch_size: int) -> LazyBatches:
        shards = eval_shard(len(self.eval_rows), rank, world_size, micro_batch_size)
        return LazyBatches(shards, lambda idx: self.make_batch([self.eval_rows[i] for i in idx]))


def place_tokens(values: list[list[float]], loss_mask: torch.Tensor) -> torch.Tensor:
    """Scatter per-response-token values into a [B, T-1] float tensor at the `loss_mask` positions (0 elsewhere)."""
    out = torch.zeros(loss_mask.shape, dtype=torch.float32)
    flat = [v for row in values for v in row]
    if len(flat) != int(loss_mask.sum()):
        raise ValueError(f"{len(flat)} per-token values for {int(loss_mask.sum())} response tokens")
    out[loss_mask] = torch.tensor(flat, dtype=torch.float32)
    return out
