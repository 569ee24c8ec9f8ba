"""Reading one JSONL line as a record: the first check every rayflow reader makes before its own fields."""

from __future__ import annotations

import json
from typing import Any

BOM = "\ufeff"


def loads_object(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one JSONL line into `(object, None)`, or `(None, reason)` when it is not a JSON object.

    Readers turn the reason into an error record for that line instead of failing the whole file. A leading
    UTF-8 byte-order mark (which editors put at the start of a file, so on its first line) is skipped.
    """
    try:
        obj = json.loads(line.removeprefix(BOM))
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err.msg} at column {err.colno}"
    except (ValueError, RecursionError) as err:  # an integer of over 4300 digits; nesting too deep
        return None, f"unreadable JSON: {err}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    return obj, None
