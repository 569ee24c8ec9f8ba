"""Serve one model with OpenAI-compatible routes: `serve run serve.llm:build_llm_app llm.engine.model=...`
or the `llm` application of `serve/config.yaml`."""

# No `from __future__ import annotations` here: `serve run` turns a YAML `args:` block into the builder's
# pydantic model only when the annotation is the class itself, not a string.
from ray.serve import Application

from rayflow.config import AppArgs
from rayflow.serving import LLMServer, LLMServerConfig, OpenAIServer, ReplicaOptions


class LLMAppArgs(AppArgs):
    llm: LLMServerConfig = LLMServerConfig()
    llm_replica: ReplicaOptions = ReplicaOptions(num_cpus=1.0)
    ingress_replica: ReplicaOptions = ReplicaOptions(num_cpus=0.1)


def build_llm_app(args: LLMAppArgs) -> Application:
    llm = LLMServer.options(**args.llm_replica.deployment_options()).bind(args.llm)
    return OpenAIServer.options(**args.ingress_replica.deployment_options()).bind(llm, args.llm)
