"""Reusable Ray Serve pieces: the generic LLM deployment (`LLMServer`, `@serve.batch`) and its OpenAI-compatible
front (`OpenAIServer`), HTTP guards (bearer auth, size limit, timeout, field-naming 4xx) and typed replica options.

Application builders that assemble these live in `serve/` (e.g. `serve/judge.py`, `serve/llm.py`).
"""

from rayflow.serving.guards import HTTPConfig
from rayflow.serving.llm import LLMServer, LLMServerConfig, OpenAIServer, from_deployment
from rayflow.serving.options import ReplicaOptions

__all__ = ["HTTPConfig", "LLMServer", "LLMServerConfig", "OpenAIServer", "ReplicaOptions", "from_deployment"]
