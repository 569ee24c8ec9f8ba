"""The function `fit` hands to Ray Train, kept free of torch and of rayflow's training modules.

Ray Train V2 unpickles the training function and its config in a controller actor that only passes them on to
the workers. Shipped as `rayflow.train.loop._train_worker` with the task in its config, every run's controller
imported torch and the task's modules (~2.5 CPU-seconds, paid again by each run of a sweep or a multi-stage
job). Here the controller imports this module and holds the payload as bytes; the workers unpickle it.
"""

from __future__ import annotations

from typing import Any


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: `config["payload"]` is `loop._train_worker`'s config, cloudpickled."""
    from ray import cloudpickle

    from rayflow.train.loop import _train_worker

    _train_worker(cloudpickle.loads(config["payload"]))
