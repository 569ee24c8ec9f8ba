"""Fit a cost profile from micro-profiles of the tiny VLM's layers on this machine.

    python -m rayflow.train.omnibal.profiler --out my_profile.json [--config configs/train_vlm.yaml]

For each layer kind one layer is run forward and backward on inputs of several sizes (tiles for vision
layers; tokens, split into one or several packed samples, for language layers), timing the median of a
few repeats, and counting the activation bytes autograd saves for backward (parameters excluded) under
each recompute mode. :func:`~rayflow.train.omnibal.costmodel.fit_nonneg` turns the points into the
profile's coefficients. Timings depend on the machine and its load; CI uses the committed
``profiles/cpu_tiny.json`` so the searched partition is deterministic there.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn

from rayflow.train.omnibal.costmodel import CostProfile, LayerKind, fit_nonneg
from rayflow.train.omnibal.tiny_vlm import TinyVLMConfig, build_layers, layer_kinds

__all__ = ["profile_model"]


def _saved_bytes(fn: Callable[[], object], exclude: set[int]) -> int:
    """Bytes of distinct tensors autograd saves while running ``fn`` (tensors in ``exclude`` not counted)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in exclude:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, kernel selection
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _inputs(kind: str, cfg: TinyVLMConfig, x: int, samples: int) -> tuple:
    """Layer inputs for ``x`` tiles or tokens; language inputs are ``samples`` equal packed samples."""
    dv, d, p, tpt = cfg.vit_hidden, cfg.hidden_size, cfg.patches_per_tile, cfg.tokens_per_tile
    if kind in ("vit_embed", "vit_block", "projector"):
        tokens = x * tpt + 16
        ids = torch.full((tokens,), 5)
        ids[: x * tpt] = cfg.image_token_id
        seq, pos = torch.zeros(tokens, dtype=torch.long), torch.arange(tokens)
        first = (
            torch.randn(x, 3, cfg.image_size, cfg.image_size)
            if kind == "vit_embed"
            else torch.randn(x, p, dv)
        )
        return first.requires_grad_(), ids, seq, pos
    length = x // samples
    seq = torch.arange(samples).repeat_interleave(length)
    pos = torch.arange(length).repeat(samples)
    return torch.randn(length * samples, d).requires_grad_(), seq, pos


def _measure(layer: nn.Module, inputs: tuple, repeats: int) -> tuple[float, float, int, int]:
    """(forward seconds, backward seconds, saved bytes, input bytes)."""
    params = {q.untyped_storage().data_ptr() for q in layer.parameters()}

    def forward():
        out = layer(inputs)
        return out[0] if isinstance(out, tuple) else out

    out = forward()
    grad = torch.randn_like(out)
    fwd = _timed(forward, repeats)

    def backward():
        layer.zero_grad(set_to_none=True)
        forward().backward(grad)

    bwd = max(_timed(backward, repeats) - fwd, 0.0)
    saved = _saved_bytes(forward, params)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs)
    return fwd, bwd, saved, input_bytes


def profile_model(
    cfg: TinyVLMConfig, *, tiles=(1, 2, 4, 8, 12, 16), tokens=(32, 64, 128, 256, 384, 512), repeats: int = 5
) -> CostProfile:
    """Micro-profile one layer of each kind and fit the model's :class:`CostProfile`."""
    torch.manual_seed(0)
    layers = build_layers(cfg)
    kinds_of = layer_kinds(cfg)
    kinds = {}
    for kind in dict.fromkeys(kinds_of):
        layer = layers[kinds_of.index(kind)]
        driver = "tiles" if kind in ("vit_embed", "vit_block", "projector") else "tokens"
        points = [(x, 1) for x in tiles] if driver == "tiles" else [(x, k) for x in tokens for k in (1, 4)]
        rows = []
        for x, k in points:
            inputs = _inputs(kind, cfg, x, k)
            fwd, bwd, saved, input_bytes = _measure(layer, inputs, repeats)
            sq = 0.0 if driver == "tiles" else k * (x // k) ** 2
            selective, sel_frac = saved, 0.0
            if hasattr(layer, "selective_recompute"):
                # The MLP region's saved tensors are dropped and its input kept instead.
                h = layer.attend(inputs[0], None, None) if kind == "vit_block" else inputs[0]
                mlp = partial(layer._mlp, h)
                mlp_saved = _saved_bytes(mlp, {q.untyped_storage().data_ptr() for q in layer.parameters()})
                selective = saved - mlp_saved + h.numel() * h.element_size()
                sel_frac = min(1.0, _timed(mlp, repeats) / max(fwd, 1e-9))
            rows.append((x, sq, fwd, bwd, saved, selective, input_bytes, sel_frac))
        a = np.array(rows, dtype=np.float64)
        x, sq = a[:, 0], a[:, 1]
        kinds[kind] = LayerKind(
            driver=driver,
            fwd=fit_nonneg(x, sq, a[:, 2]),
            bwd=fit_nonneg(x, sq, a[:, 3]),
            act={
                "none": fit_nonneg(x, sq, a[:, 4]),
                "selective": fit_nonneg(x, sq, a[:, 5]),
                "full": fit_nonneg(x, sq, a[:, 6]),
            },
            selective_frac=float(np.median(a[:, 7])),
            params=sum(q.numel() for q in layer.parameters()),
        )
    meta = {
        "source": "profiler",
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }
    return CostProfile(kinds=kinds, layers=kinds_of, state_bytes_per_param=16.0, meta=meta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rayflow.train.omnibal.profiler",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="profile JSON to write")
    parser.add_argument("--config", help="train_vlm YAML whose model and tokenizer settings to profile")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (match the training workers')")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from rayflow.config import load_config
    from rayflow.llm import resolve_model
    from rayflow.train.omnibal.train import TrainVLMConfig

    cfg = load_config(TrainVLMConfig, args.config)
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.tokenizer))
    profile = profile_model(cfg.vlm_config(tokenizer), repeats=args.repeats)
    profile.to_json(args.out)
    print(f"wrote {args.out}: {len(profile.layers)} layers, kinds {', '.join(profile.kinds)}")


if __name__ == "__main__":
    main()
