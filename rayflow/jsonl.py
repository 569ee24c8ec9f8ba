"""Reading one JSONL line as a record: the first check every rayflow reader makes before its own fields."""

from __future__ import annotations

import json
from typing import Any


def loads_object(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one JSONL line into `(object, None)`, or `(None, reason)` when it is not a JSON object.

    Readers turn the reason into an error record for that line instead of failing the whole file.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err.msg} at column {err.colno}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    return obj, None
