"""`make bench`: run every benchmark script in benchmarks/ in turn, then print one table from benchmarks/results/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    scripts = [p for p in sorted(HERE.glob("*.py")) if not p.name.startswith("_") and p.name != "run_all.py"]
    for script in scripts:
        print(f"== {script.name}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    print(f"\n{'benchmark':<28} {'candidate':>22} {'baseline':>22} {'ratio':>7}  unit")
    for path in sorted((HERE / "results").glob("*.json")):
        r = json.loads(path.read_text())
        cand = f"{r['candidate']['label']} {r['candidate']['value']:.4g}"
        base = f"{r['baseline']['label']} {r['baseline']['value']:.4g}"
        arrow = "higher is better" if r["higher_is_better"] else "lower is better"
        print(f"{r['name']:<28} {cand:>22} {base:>22} {r['ratio']:>7.2f}  {r['unit']} ({arrow})")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
