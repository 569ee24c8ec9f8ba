"""A tiny vision-language model built locally: ViT-style encoder + projector + Llama-style decoder.

It has the structure of InternVL at toy size, so OmniBal's three balancers meet the same heterogeneity:
ViT blocks run on every tile's patches, the projector turns each tile into ``tokens_per_tile`` LLM tokens
(2x2 pixel shuffle + MLP), and LLM blocks run on the packed token sequence.

The model is a flat list of layers, each mapping a tuple of tensors to a tuple of tensors, which is what a
DeepSpeed ``PipelineModule`` partitions (``pipeline.py``) and what the cost profiler times one by one:

    VisionEmbed -> VisionBlock x V -> Merge (projector + token embedding) -> DecoderBlock x L -> Head

Inputs are one packed group: ``pixels`` [N, 3, S, S] (real tiles first, then one dummy tile per text-only
sample), ``input_ids`` [T] (``image_token_id`` where image tokens go), ``seq_ids`` [T] (which sample each
token belongs to, contiguous: attention stays within a sample) and ``pos_ids`` [T] (position within its sample).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PretrainedConfig, PreTrainedModel

__all__ = ["TinyVLM", "TinyVLMConfig", "build_layers", "lm_loss"]


class TinyVLMConfig(PretrainedConfig):
    model_type = "rayflow_tiny_vlm"

    def __init__(
        self,
        vocab_size: int = 1025,
        image_token_id: int = 1024,
        pad_token_id: int = 0,
        image_size: int = 16,
        patch_size: int = 4,
        vit_hidden: int = 64,
        vit_layers: int = 4,
        vit_heads: int = 2,
        hidden_size: int = 128,
        intermediate_size: int = 256,
        llm_layers: int = 4,
        llm_heads: int = 2,
        rope_theta: float = 10000.0,
        **kwargs,
    ) -> None:
        self.vocab_size, self.image_token_id = vocab_size, image_token_id
        self.image_size, self.patch_size = image_size, patch_size
        self.vit_hidden, self.vit_layers, self.vit_heads = vit_hidden, vit_layers, vit_heads
        self.hidden_size, self.intermediate_size = hidden_size, intermediate_size
        self.llm_layers, self.llm_heads, self.rope_theta = llm_layers, llm_heads, rope_theta
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def patches_per_tile(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_tile(self) -> int:
        return self.patches_per_tile // 4  # 2x2 pixel shuffle


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class _Block(nn.Module):
    """Pre-norm transformer block; ``selective_recompute`` re-runs its MLP in backward instead of storing it."""

    def __init__(self, dim: int, heads: int, mlp: nn.Module) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.mlp = mlp
        self.selective_recompute = False

    def attend(self, x: torch.Tensor, segments: list[int] | None, rope: tuple | None) -> torch.Tensor:
        """Self-attention over ``x`` [..., n, dim]; with ``segments`` (lengths summing to n), causal within each.

        Each packed sample attends on its own, so a group costs sum(t_i^2) like varlen flash attention,
        and a padded sample costs max_len^2, as in a padded [B, max_len] batch.
        """
        *lead, n, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(*lead, n, 3, self.heads, dim // self.heads).unbind(-3)
        q, k, v = (t.transpose(-2, -3) for t in (q, k, v))  # [..., heads, n, head_dim]
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        if segments is None:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.cat(
                [
                    F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
                    for qs, ks, vs in zip(q.split(segments, -2), k.split(segments, -2), v.split(segments, -2))
                ],
                dim=-2,
            )
        return x + self.out(y.transpose(-2, -3).reshape(*lead, n, dim))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.selective_recompute and torch.is_grad_enabled():
            return x + checkpoint(self._mlp, x, use_reentrant=False)
        return x + self._mlp(x)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up, self.down = nn.Linear(dim, 2 * hidden, bias=False), nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class VisionEmbed(nn.Module):
    """Tiles [N, 3, S, S] -> patch embeddings [N, P, Dv]."""

    def __init__(self, cfg: TinyVLMConfig) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, cfg.vit_hidden, cfg.patch_size, stride=cfg.patch_size)
        self.pos = nn.Parameter(torch.zeros(cfg.patches_per_tile, cfg.vit_hidden))

    def forward(self, inputs: tuple) -> tuple:
        pixels, *rest = inputs
        return (self.patch(pixels).flatten(2).transpose(1, 2) + self.pos, *rest)


class VisionBlock(_Block):
    """Bidirectional attention within each tile."""

    def __init__(self, cfg: TinyVLMConfig) -> None:
        mlp = nn.Sequential(
            nn.Linear(cfg.vit_hidden, 4 * cfg.vit_hidden),
            nn.GELU(),
            nn.Linear(4 * cfg.vit_hidden, cfg.vit_hidden),
        )
        super().__init__(cfg.vit_hidden, cfg.vit_heads, mlp)

    def forward(self, inputs: tuple) -> tuple:
        h, *rest = inputs
        return (self.feed_forward(self.attend(h, None, None)), *rest)


class Merge(nn.Module):
    """Projector (2x2 pixel shuffle + MLP) and token embedding; image features fill the image-token slots."""

    def __init__(self, cfg: TinyVLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Sequential(
            RMSNorm(4 * cfg.vit_hidden),
            nn.Linear(4 * cfg.vit_hidden, cfg.hidden_size),
            nn.GELU(),
            nn.Linear(cfg.hidden_size, cfg.hidden_size),
        )
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)

    def forward(self, inputs: tuple) -> tuple:
        h_v, input_ids, seq_ids, pos_ids = inputs
        n, p, d = h_v.shape
        side = math.isqrt(p)
        grid = h_v.view(n, side // 2, 2, side // 2, 2, d).permute(0, 1, 3, 2, 4, 5)
        feats = self.proj(grid.reshape(n, (side // 2) ** 2, 4 * d))  # [N, tokens_per_tile, D]
        h = self.embed(input_ids)
        slots = input_ids == self.cfg.image_token_id
        real = int(slots.sum()) // self.cfg.tokens_per_tile
        h = h.masked_scatter(slots[:, None], feats[:real].reshape(-1, h.shape[-1]).to(h.dtype))
        # Dummy tiles (text-only samples) stay in the graph with zero weight, so every rank's ViT gets
        # gradients and the collectives see the same parameters, as in InternVL.
        h = h + 0.0 * feats[real:].sum()
        return h, seq_ids, pos_ids


class DecoderBlock(_Block):
    """Llama-style block: RMSNorm, rotary attention restricted to each packed sample, SwiGLU MLP."""

    def __init__(self, cfg: TinyVLMConfig) -> None:
        super().__init__(cfg.hidden_size, cfg.llm_heads, SwiGLU(cfg.hidden_size, cfg.intermediate_size))
        self.head_dim, self.rope_theta = cfg.hidden_size // cfg.llm_heads, cfg.rope_theta

    def forward(self, inputs: tuple) -> tuple:
        h, seq_ids, pos_ids = inputs
        # Computed per call rather than kept as a buffer: buffers are not restored by from_pretrained's
        # meta-device loading, and this is cheap next to the attention.
        inv_freq = self.rope_theta ** -(torch.arange(0, self.head_dim, 2, device=h.device) / self.head_dim)
        angles = pos_ids[:, None].float() * inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        segments = torch.unique_consecutive(seq_ids, return_counts=True)[1].tolist()
        h = self.attend(h, segments, (angles.cos(), angles.sin()))
        return self.feed_forward(h), seq_ids, pos_ids


class Head(nn.Module):
    def __init__(self, cfg: TinyVLMConfig) -> None:
        super().__init__()
        self.norm, self.lm_head = (
            RMSNorm(cfg.hidden_size),
            nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False),
        )

    def forward(self, inputs: tuple) -> torch.Tensor:
        return self.lm_head(self.norm(inputs[0]))


def build_layers(cfg: TinyVLMConfig) -> list[nn.Module]:
    """The model's layers in pipeline order."""
    return (
        [VisionEmbed(cfg)]
        + [VisionBlock(cfg) for _ in range(cfg.vit_layers)]
        + [Merge(cfg)]
        + [DecoderBlock(cfg) for _ in range(cfg.llm_layers)]
        + [Head(cfg)]
    )


def layer_kinds(cfg: TinyVLMConfig) -> tuple[str, ...]:
    """Cost-profile kind of each layer, aligned with :func:`build_layers`."""
    return (
        ("vit_embed",)
        + ("vit_block",) * cfg.vit_layers
        + ("projector",)
        + ("llm_block",) * cfg.llm_layers
        + ("head",)
    )


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions; ``labels`` [T] already hold the next token."""
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


class TinyVLM(PreTrainedModel):
    """The layers run in sequence; ``forward`` returns the loss when labels are given, else logits [T, V]."""

    config_class = TinyVLMConfig
    base_model_prefix = "vlm"

    def __init__(self, config: TinyVLMConfig) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList(build_layers(config))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        seq_ids: torch.Tensor,
        pos_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = (pixels, input_ids, seq_ids, pos_ids)
        for layer in self.layers:
            x = layer(x)
        return x if labels is None else lm_loss(x, labels)
