"""Engine backends by name. `build_engine` imports the one a config asks for, on demand, so building an hf
engine never imports vLLM and no module imports its own implementations.

Add a backend: a class taking an `EngineConfig` and implementing `Engine`, registered in `BACKENDS` as
"module:Class", and its name in `EngineConfig.backend`.
"""

from __future__ import annotations

from importlib import import_module

from rayflow.llm.types import Engine, EngineConfig, EngineError

BACKENDS: dict[str, str] = {
    "hf": "rayflow.llm.backends.hf:HFEngine",
    "vllm": "rayflow.llm.backends.vllm:VLLMEngine",
    "openai": "rayflow.llm.backends.openai:OpenAIEngine",
}


def build_engine(config: EngineConfig) -> Engine:
    """Build the backend named by `config.backend`. A missing backend package raises `EngineError` naming the extra."""
    if not isinstance(config, EngineConfig):
        raise TypeError(f"build_engine takes an EngineConfig, not {type(config).__name__}")
    module, cls = BACKENDS[config.backend].split(":")
    return getattr(import_module(module), cls)(config)


def missing_backend(backend: str, package: str, err: ImportError) -> EngineError:
    """The error for a backend whose package is not installed, naming what to install."""
    extra = "'rayflow[cpu]' (CPU) or 'rayflow[gpu]' (CUDA)" if package == "vllm" else "rayflow"
    return EngineError(
        f"the {backend!r} engine backend needs the {package!r} package, which is not importable ({err}); "
        f"install {extra}"
    )
