"""DeepSpeed pipeline mode for the tiny VLM: explicit stage boundaries and per-layer recompute.

DeepSpeed's ``PipelineModule`` only knows ``uniform``, ``parameters`` and ``type:`` partitions and one
global ``activation_checkpoint_interval``. :class:`ExplicitPipeline` takes the boundaries the partition
search found (``parts``), and every layer is wrapped in :class:`~rayflow.train.omnibal.recompute.Recomputed`
with its stage's planned mode, so recompute differs per stage. ``dynamic_shape=True`` because packed
groups change length every micro-batch (without it gloo fails with "Received data size doesn't match
expected size").

Importing this module does not import DeepSpeed; the builders do, inside the Ray Train worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rayflow.train.omnibal.recompute import Recomputed
from rayflow.train.omnibal.tiny_vlm import TinyVLM, TinyVLMConfig, build_layers, lm_loss

__all__ = ["build_pipeline", "pipeline_state_to_model", "wrap_layers"]


def wrap_layers(cfg: TinyVLMConfig, modes: Sequence[str]) -> list[nn.Module]:
    """The model's layers, each under its recompute mode (``none`` too, so parameter names never change)."""
    layers = build_layers(cfg)
    if len(modes) != len(layers):
        raise ValueError(f"{len(modes)} recompute modes for {len(layers)} layers")
    return [Recomputed(layer, mode) for layer, mode in zip(layers, modes)]


def build_pipeline(cfg: TinyVLMConfig, parts: Sequence[int], modes: Sequence[str], *, data_parallel: int = 1):
    """A ``PipelineModule`` with stage s owning layers ``parts[s]:parts[s+1]``; needs torch.distributed up."""
    from deepspeed.pipe import PipelineModule
    from deepspeed.runtime.pipe.topology import PipeDataParallelTopology

    stages = len(parts) - 1

    class ExplicitPipeline(PipelineModule):
        # DeepSpeed has no public hook for explicit boundaries: this overrides the private partitioning step
        # and sets the bounds through its private setter, the same two calls its own methods end in.
        def _partition_layers(self, method: str = "uniform") -> None:
            if len(self._layer_specs) != parts[-1]:
                raise ValueError(
                    f"parts {list(parts)} do not cover the model's {len(self._layer_specs)} layers"
                )
            self.parts = list(parts)  # public: the export reads each stage's first layer from it
            self._set_bounds(start=self.parts[self.stage_id], stop=self.parts[self.stage_id + 1])

    topology = PipeDataParallelTopology(num_pp=stages, num_dp=data_parallel)
    return ExplicitPipeline(
        layers=wrap_layers(cfg, modes),
        topology=topology,
        loss_fn=lm_loss,
        partition_method="explicit",
        activation_checkpoint_interval=0,
        dynamic_shape=True,
    )


def pipeline_state_to_model(cfg: TinyVLMConfig, layer_states: dict[int, dict[str, torch.Tensor]]) -> TinyVLM:
    """Assemble per-layer state dicts (keys as in :func:`wrap_layers`, i.e. ``layer.<name>``) into a TinyVLM."""
    model = TinyVLM(cfg)
    state = {
        f"layers.{i}.{k.removeprefix('layer.')}": v for i, sd in layer_states.items() for k, v in sd.items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"pipeline state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model
