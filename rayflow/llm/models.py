"""Where a model comes from: `resolve_model_path` turns a config's model name into what a backend loads.

Names are `tiny:<size>[@<train_steps>]` (built offline on first use by `rayflow.llm.tiny`), local
directories, or hub ids.
"""

from __future__ import annotations

import os
from pathlib import Path

from rayflow.llm.types import EngineError


def resolve_model_path(name: str) -> str:
    """Turn `tiny:<size>` into a built local directory; check that path-like names exist.

    A name is path-like when it starts with `/`, `.` or `~` or has more than one `/`; hub ids (`org/name`)
    pass through unchanged and are loaded by the library (offline they must already be cached).
    Raises `EngineError` naming a missing path.
    """
    if name.startswith("tiny:"):
        # The builder imports torch and transformers: only names that need it pay for it.
        from rayflow.llm.tiny import resolve_model

        return resolve_model(name)
    expanded = os.path.expanduser(name)
    path_like = name.startswith(("/", ".", "~")) or name.count("/") > 1
    if path_like and not Path(expanded).is_dir():
        raise EngineError(f"model path {name!r} does not exist (or is not a directory)")
    return expanded if path_like else name
