"""`make bench`: run every benchmark script in benchmarks/ in turn, then print one table from benchmarks/results/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _num(value: float | None) -> str:
    # A benchmark whose baseline could not run records null rather than a made-up figure.
    return "n/a" if value is None else f"{value:.4g}"


def main() -> int:
    failed = []
    scripts = [p for p in sorted(HERE.glob("*.py")) if not p.name.startswith("_") and p.name != "run_all.py"]
    for script in scripts:
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    print(f"\n{'benchmark':<24} {'ratio':>7} {'candidate':>12} {'baseline':>12}  unit")
    for path in sorted((HERE / "results").glob("*.json")):
        r = json.loads(path.read_text())
        arrow = "higher is better" if r["higher_is_better"] else "lower is better"
        print(
            f"{r['name']:<24} {_num(r['ratio']):>7} {_num(r['candidate']['value']):>12} "
            f"{_num(r['baseline']['value']):>12}  {r['unit']} ({arrow})"
        )
        print(f"{'':<24} {r['candidate']['label']}  vs  {r['baseline']['label']}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
