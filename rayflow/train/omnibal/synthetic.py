"""Synthetic image-text data: length distributions for simulation, and samples the tiny VLM trains on.

- :func:`internvl_like_lengths` draws (tiles, tokens) with the statistics OmniBal reports for InternVL
  SFT data (1-5 ViT tiles per sample, 256 LLM tokens per tile, about 1.1K +- 0.4K tokens in all, ~8%
  text-only samples carrying one dummy tile). It stands in for the real length files, which rayflow
  cannot download.
- :func:`image_text_samples` writes records in rayflow's image-text JSONL format for the tiny VLM: each
  image is a colour class (the model sees a noisy image of that colour) and the caption names the colours
  in order, followed by a variable-length stretch of text; so the task is learnable only by looking.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLOURS", "image_pixels", "image_text_samples", "internvl_like_lengths"]

COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "white", "black")
_RGB = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=np.float32
)

_FILLER_TEXT = (
    "the picture shows a scene with some shapes and a plain background that fills the frame while "
    "a few small marks sit near the corners and the light falls evenly across every part of it"
)
_FILLER = _FILLER_TEXT.split()


def internvl_like_lengths(
    n: int, *, seed: int = 0, tokens_per_tile: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of (vit tiles [n], LLM tokens [n]) shaped like InternVL-1.5 SFT data."""
    rng = np.random.default_rng(seed)
    text_only = rng.random(n) < 0.08
    tiles = rng.choice([1, 2, 3, 4, 5], size=n, p=[0.2, 0.1, 0.15, 0.1, 0.45])
    text = np.clip(rng.lognormal(mean=np.log(180), sigma=0.8, size=n), 8, 3000).astype(np.int64)
    # Text-only samples are longer conversations; they still run one dummy ViT tile.
    text = np.where(
        text_only, np.clip(rng.lognormal(np.log(900), 0.5, size=n), 32, 4000).astype(np.int64), text
    )
    tokens = np.where(text_only, text, text + tiles * tokens_per_tile)
    return np.where(text_only, 1, tiles).astype(np.int64), tokens.astype(np.int64)


def image_text_samples(
    n: int, *, seed: int = 0, max_images: int = 4, max_filler: int = 60, skew: float = 1.0
) -> list[dict]:
    """``n`` records ``{"id", "images", "text"}`` with 0..``max_images`` images and variable text.

    ``skew`` > 1 makes lengths heavy-tailed (a few samples with many images and long text), the case where
    random batching wastes the most.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        heavy = rng.random() < 0.2 * skew / (1 + skew)
        k = int(rng.integers(0, max_images + 1)) if not heavy else max_images
        images = rng.integers(0, len(COLOURS), size=k).tolist()
        filler = int(rng.integers(1, max_filler + 1) * (skew if heavy else 1.0))
        words = [COLOURS[c] for c in images] or ["no", "image"]
        tail = [_FILLER[(i + j) % len(_FILLER)] for j in range(filler)]
        out.append({"id": f"s{i}", "images": images, "text": " ".join(words + ["."] + tail)})
    return out


def image_pixels(sample_id: str, image_pos: int, colour: int, size: int) -> np.ndarray:
    """A noisy ``[3, size, size]`` float32 image of colour class ``colour``, reproducible per (sample, image)."""
    seed = [int.from_bytes(sample_id.encode()[-8:].rjust(8, b"\0"), "little"), image_pos]
    noise = np.random.default_rng(seed).normal(0.0, 0.3, size=(3, size, size)).astype(np.float32)
    return _RGB[colour][:, None, None] + noise
