"""Image-text samples -> the tiny VLM's packed inputs, and the length index that matches them exactly.

Each sample becomes ``tokens_per_tile`` image tokens per image followed by its text tokens and EOS; the
labels are the next token wherever that token is text, so the model must read the image to name its
colour. A group is collated as one packed sequence (ISF); a padded batch (the random baseline) is
collated the same way but with every sample padded to the group's longest, so it computes exactly the
padding a [B, max_len] tensor would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rayflow.train.omnibal.index import ImageTextFormat, LengthIndex
from rayflow.train.omnibal.synthetic import image_pixels
from rayflow.train.omnibal.tiny_vlm import TinyVLMConfig

__all__ = ["VLMData"]


class VLMData:
    """Tokenised samples plus collation. ``samples``: records ``{"id", "images", "text"}``."""

    def __init__(self, samples: Sequence[dict], tokenizer, cfg: TinyVLMConfig) -> None:
        self.samples, self.cfg = list(samples), cfg
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        texts = [s["text"] for s in self.samples]
        self.text_ids = (
            [ids + [self.eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            if texts
            else []
        )

    @staticmethod
    def format(tokenizer, cfg: TinyVLMConfig) -> ImageTextFormat:
        """The (tiles, tokens) counting that :meth:`collate` realises: one tile per image, text + EOS."""
        return ImageTextFormat(
            tiles_per_image=1,
            tokens_per_tile=cfg.tokens_per_tile,
            count_text=lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1,
        )

    def index(self) -> LengthIndex:
        """(tiles, tokens) per sample, from this object's own tokenisation: what :meth:`collate` produces."""
        images = np.array([len(s["images"]) for s in self.samples], dtype=np.int64)
        text = np.array([len(ids) for ids in self.text_ids], dtype=np.int64)
        return LengthIndex(
            ids=np.array([s["id"] for s in self.samples], dtype=str),
            vit=np.maximum(images, 1),
            tok=text + images * self.cfg.tokens_per_tile,
            source=np.array([s.get("source", "") for s in self.samples], dtype=str),
        )

    def collate(self, positions: np.ndarray, *, packed: bool = True) -> dict[str, torch.Tensor]:
        """Inputs for samples at ``positions``: pixels [N, 3, S, S], input_ids/seq_ids/pos_ids/labels [T]."""
        tpt, size = self.cfg.tokens_per_tile, self.cfg.image_size
        rows = [self._row(int(p)) for p in positions]
        width = max(len(ids) for ids, _ in rows)
        ids, labels, seq, pos = [], [], [], []
        for k, (row_ids, row_labels) in enumerate(rows):
            pad = 0 if packed else width - len(row_ids)
            ids += row_ids + [self.pad] * pad
            labels += row_labels + [-100] * pad
            seq += [k] * (len(row_ids) + pad)
            pos += list(range(len(row_ids) + pad))
        real, dummy = [], []
        for p in positions:
            sample = self.samples[int(p)]
            real += [image_pixels(sample["id"], i, c, size) for i, c in enumerate(sample["images"])]
            if not sample["images"]:
                dummy.append(np.zeros((3, size, size), dtype=np.float32))
        assert sum(i == self.cfg.image_token_id for i in ids) == len(real) * tpt
        return {
            "pixels": torch.from_numpy(np.stack(real + dummy)),
            "input_ids": torch.tensor(ids),
            "seq_ids": torch.tensor(seq),
            "pos_ids": torch.tensor(pos),
            "labels": torch.tensor(labels),
        }

    def _row(self, p: int) -> tuple[list[int], list[int]]:
        images = len(self.samples[p]["images"]) * self.cfg.tokens_per_tile
        ids = [self.cfg.image_token_id] * images + self.text_ids[p]
        # Labels are the next token where it is text; the last image token predicts the first word.
        labels = [ids[i + 1] if i + 1 >= images else -100 for i in range(len(ids) - 1)] + [-100]
        return ids, labels
