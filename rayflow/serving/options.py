"""Typed replica settings for app builders, so a YAML `args:` block sizes each deployment."""

from __future__ import annotations

from pydantic import Field

from rayflow.config import Config


class ReplicaOptions(Config):
    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0, description="Ray CPUs reserved per replica (fractions allowed)")
    num_gpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(
        256, ge=1, description="requests a replica holds at once (>= max_batch_size)"
    )
    health_check_period_s: float = Field(
        10.0, gt=0, description="seconds between Serve's health checks; 3 failures in a row replace the replica"
    )
    health_check_timeout_s: float = Field(30.0, gt=0, description="a health check without answer by then fails")

    def deployment_options(self) -> dict:
        """Keyword arguments for `Deployment.options(...)`."""
        return {
            "num_replicas": self.num_replicas,
            "max_ongoing_requests": self.max_ongoing_requests,
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
        }
