"""Per-layer cost model: time and activation memory of each pipeline layer as a function of its input.

Vision layers scale with ViT tiles, language layers with LLM tokens. For a micro-batch with ``x`` driver
units (tiles, or tokens actually computed) and ``sq`` the attention term (sum of squared sequence
lengths, 0 for tile-driven layers, whose per-tile attention is a constant folded into the linear term):

    forward seconds  = f0 + f1 * x + f2 * sq          backward seconds = b0 + b1 * x + b2 * sq
    saved bytes      = a0 + a1 * x + a2 * sq          (kept for backward, per recompute mode)

Recompute modes of a layer: ``none`` keeps everything; ``selective`` re-runs the layer's MLP in backward
(it keeps ``selective`` bytes and re-spends ``selective_frac`` of its forward); ``full`` keeps only the
layer input (``full`` bytes) and re-runs the whole forward.

A :class:`CostProfile` is either fitted from micro-profiles on the actual machine (``profiler.py``,
committed as ``profiles/*.json`` so that CI's searched partition is deterministic) or derived from FLOP
counts for a model that cannot run here (:func:`flops_profile`, used by the InternVL-scale simulation).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from rayflow.train.omnibal.schedule import GroupWork

__all__ = ["CostProfile", "LayerCosts", "LayerKind", "fit_nonneg", "flops_profile"]

MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class LayerKind:
    """Fitted coefficients of one kind of layer; tuples are (constant, per x, per sq)."""

    driver: Literal["tiles", "tokens"]
    fwd: tuple[float, float, float]
    bwd: tuple[float, float, float]
    act: dict[str, tuple[float, float, float]]  # recompute mode -> saved bytes coefficients
    selective_frac: float  # share of the forward re-run under selective recompute
    params: int


@dataclass(frozen=True)
class LayerCosts:
    """Costs of L layers on G micro-batches: arrays [L, G] (seconds or bytes)."""

    fwd: np.ndarray
    bwd: np.ndarray
    act: dict[str, np.ndarray]
    selective_frac: np.ndarray  # [L]


@dataclass(frozen=True)
class CostProfile:
    """Layer kinds, the model's layer sequence (kind names), and how many bytes of state a parameter holds."""

    kinds: dict[str, LayerKind]
    layers: tuple[str, ...]
    state_bytes_per_param: float = 16.0  # fp32 weights + grads + Adam moments
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.layers) - set(self.kinds))
        if unknown:
            raise ValueError(f"layers use undefined kinds: {unknown}")

    @property
    def params(self) -> np.ndarray:
        """Parameters per layer, [L]."""
        return np.array([self.kinds[k].params for k in self.layers], dtype=np.float64)

    def costs(self, work: GroupWork) -> LayerCosts:
        """Every layer's costs on every group of ``work``."""
        per_kind = {}
        for name, kind in self.kinds.items():
            x = work.tiles if kind.driver == "tiles" else work.run_tokens
            sq = np.zeros_like(x) if kind.driver == "tiles" else work.sq_tokens
            basis = np.stack([np.ones_like(x), x, sq])  # [3, G]
            per_kind[name] = (
                np.asarray(kind.fwd) @ basis,
                np.asarray(kind.bwd) @ basis,
                {m: np.maximum(np.asarray(kind.act[m]) @ basis, 0.0) for m in MODES},
            )
        fwd = np.stack([per_kind[k][0] for k in self.layers])
        bwd = np.stack([per_kind[k][1] for k in self.layers])
        act = {m: np.stack([per_kind[k][2][m] for k in self.layers]) for m in MODES}
        sel = np.array([self.kinds[k].selective_frac for k in self.layers])
        return LayerCosts(fwd=fwd, bwd=bwd, act=act, selective_frac=sel)

    def group_seconds(self, work: GroupWork) -> np.ndarray:
        """Forward + backward seconds of the whole model per group, [G]: the cost used to balance steps."""
        total = np.zeros(len(work.tiles))
        for name, kind in self.kinds.items():
            x = work.tiles if kind.driver == "tiles" else work.run_tokens
            sq = 0.0 if kind.driver == "tiles" else work.sq_tokens
            coef = np.add(kind.fwd, kind.bwd)
            total += self.layers.count(name) * (coef[0] + coef[1] * x + coef[2] * sq)
        return total

    def to_json(self, path: str | Path) -> None:
        data = {
            "kinds": {k: asdict(v) for k, v in self.kinds.items()},
            "layers": list(self.layers),
            "state_bytes_per_param": self.state_bytes_per_param,
            "meta": self.meta,
        }
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> CostProfile:
        data = json.loads(Path(path).read_text())
        kinds = {
            name: LayerKind(
                driver=k["driver"],
                fwd=tuple(k["fwd"]),
                bwd=tuple(k["bwd"]),
                act={m: tuple(v) for m, v in k["act"].items()},
                selective_frac=k["selective_frac"],
                params=k["params"],
            )
            for name, k in data["kinds"].items()
        }
        return cls(
            kinds=kinds,
            layers=tuple(data["layers"]),
            state_bytes_per_param=data["state_bytes_per_param"],
            meta=data.get("meta", {}),
        )


def fit_nonneg(x: np.ndarray, sq: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares fit y ~ c0 + c1 x + c2 sq with every coefficient >= 0.

    Tries each subset of the three terms and keeps the best fit whose coefficients are all non-negative
    (exact non-negative least squares for three unknowns); a negative slope would make the search
    prefer bigger inputs, which no real layer does.
    """
    x, sq, y = (np.asarray(a, dtype=np.float64) for a in (x, sq, y))
    basis = np.stack([np.ones_like(x), x, sq], axis=1)
    best, best_err = (float(max(y.mean(), 0.0)), 0.0, 0.0), np.inf
    for mask in range(1, 8):
        cols = [i for i in range(3) if mask >> i & 1]
        coef, *_ = np.linalg.lstsq(basis[:, cols], y, rcond=None)
        if (coef < 0).any():
            continue
        err = float(((basis[:, cols] @ coef - y) ** 2).sum())
        if err < best_err - 1e-18:
            full = [0.0, 0.0, 0.0]
            for i, c in zip(cols, coef):
                full[i] = float(c)
            best, best_err = tuple(full), err
    return best


def flops_profile(
    *,
    vit_layers: int = 45,
    vit_hidden: int = 3200,
    vit_mlp: int = 12800,
    patches_per_tile: int = 1025,
    llm_layers: int = 48,
    llm_hidden: int = 6144,
    llm_mlp: int = 16384,
    llm_kv_ratio: float = 0.125,
    vocab: int = 92544,
    tokens_per_tile: int = 256,
    peak_flops: float = 312e12,
    mfu: float = 0.45,
    bytes_per_act: int = 2,
    state_bytes_per_param: float = 16.0,
) -> CostProfile:
    """A profile from FLOP counts; defaults are InternVL-Chat-1.5 (InternViT-6B + InternLM2-20B) on A100s.

    Time = FLOPs / (peak_flops * mfu), backward = 2 x forward. Saved activations follow Megatron's
    per-token estimate for a transformer block (34 * hidden bytes in 16-bit, without attention scores:
    flash attention), of which the MLP holds 19 * hidden; a checkpointed layer keeps its input.
    """
    rate = peak_flops * mfu
    unit = bytes_per_act / 2  # the 34/19/2 factors are for 16-bit activations

    def block(
        hidden: int, mlp: int, kv: float, per_x: float, driver: str, sq_attn: float, mlp_gated: bool
    ) -> LayerKind:
        attn_params = hidden * hidden * (2 + 2 * kv)
        mlp_params = hidden * mlp * (3 if mlp_gated else 2)
        mlp_flops = 2 * mlp_params * per_x
        f1 = (2 * (attn_params + mlp_params) * per_x + sq_attn) / rate
        f2 = 4 * hidden / rate if driver == "tokens" else 0.0
        act = {
            "none": (0.0, 34 * hidden * per_x * unit, 0.0),
            "selective": (0.0, 15 * hidden * per_x * unit, 0.0),
            "full": (0.0, 2 * hidden * per_x * unit, 0.0),
        }
        return LayerKind(
            driver=driver,
            fwd=(0.0, f1, f2),
            bwd=(0.0, 2 * f1, 2 * f2),
            act=act,
            selective_frac=(mlp_flops / rate) / f1,
            params=int(attn_params + mlp_params),
        )

    # ViT attention is within a tile: 4 * patches^2 * hidden FLOPs per tile, folded into the per-tile term.
    vit = block(
        vit_hidden, vit_mlp, 1.0, patches_per_tile, "tiles", 4 * patches_per_tile**2 * vit_hidden, False
    )
    llm = block(llm_hidden, llm_mlp, llm_kv_ratio, 1, "tokens", 0.0, True)
    embed_params = 3 * 14 * 14 * vit_hidden
    # Pixel-shuffle projector: 4 * vit_hidden -> llm_hidden -> llm_hidden, on each tile's image tokens.
    proj_params = 4 * vit_hidden * llm_hidden + llm_hidden * llm_hidden
    head_params = vocab * llm_hidden

    def linear(params: int, per_x: float, driver: str, out_width: int, extra_params: int = 0) -> LayerKind:
        f1 = 2 * params * per_x / rate
        act = {m: (0.0, out_width * per_x * bytes_per_act, 0.0) for m in MODES}
        return LayerKind(
            driver=driver,
            fwd=(0.0, f1, 0.0),
            bwd=(0.0, 2 * f1, 0.0),
            act=act,
            selective_frac=0.0,
            params=int(params + extra_params),
        )

    kinds = {
        "vit_embed": linear(embed_params, patches_per_tile, "tiles", vit_hidden),
        "vit_block": vit,
        # The merge layer also holds the token embedding: no FLOPs to speak of, but vocab x hidden
        # parameters, which is what a parameter-balanced split sees.
        "projector": linear(
            proj_params, tokens_per_tile, "tiles", llm_hidden, extra_params=vocab * llm_hidden
        ),
        "llm_block": llm,
        "head": linear(head_params, 1, "tokens", vocab),
    }
    layers = (
        ("vit_embed",)
        + ("vit_block",) * vit_layers
        + ("projector",)
        + ("llm_block",) * llm_layers
        + ("head",)
    )
    return CostProfile(
        kinds=kinds,
        layers=layers,
        state_bytes_per_param=state_bytes_per_param,
        meta={"source": "flops", "peak_flops": peak_flops, "mfu": mfu},
    )
