"""ProX job scaling: the whole job with the rules generator on 2 CPUs (candidate) vs 1 CPU (baseline).

Each side runs the job (`configs/prox_refine.yaml`, the rules generator) in a fresh process pinned with `taskset`
to that many cores, on a local Ray told it has that many CPUs (Ray and all its workers inherit the pinning), with
one fused stage actor per CPU, on the sample corpus replicated to `--copies` x 20 documents over 16 files. Rate: documents/s at steady state, from the commit times of the
output parts (Ray start-up and the first block excluded). Run: `python benchmarks/prox_job.py [--copies 640]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.data.prox.output import Output, steady_rate

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "web_corpus.jsonl"


def write_corpus(directory: Path, copies: int, files: int = 16) -> int:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    directory.mkdir(parents=True)
    n = 0
    for f in range(files):
        with open(directory / f"part-{f:03d}.jsonl", "w") as out:
            for c in range(copies // files):
                for r in rows:
                    out.write(json.dumps({**r, "id": f"{r['id']}-{f}-{c}"}) + "\n")
                    n += 1
    return n


def run(cpus: int, corpus: Path, out: Path) -> dict:
    """One side: this script again, pinned with `taskset` to `cpus` cores, running the job on a Ray of `cpus`."""
    cores = ",".join(str(i) for i in range(cpus))
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_AUTH_MODE": "disabled"}
    cmd = ["taskset", "-c", cores, sys.executable, __file__, "--side", str(cpus), str(corpus), str(out)]
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"job on {cpus} CPU(s) failed:\n{proc.stderr[-3000:]}")
    return steady_rate(Output(str(out)))


def side(cpus: int, corpus: str, out: str) -> None:
    """Run the shipped rules config on a local Ray told it has `cpus` CPUs (Ray counts cores, not the pinning)."""
    import ray

    from rayflow.config import load_config
    from rayflow.data.prox.pipeline import ProxRefineConfig
    from rayflow.data.prox.pipeline import run as refine

    overrides = [f"input={corpus}", f"output_dir={out}", "tokenizer=null", "fuse_stages=true"]
    overrides += [
        f"stage.actors={cpus}",
        "stage.cpus_per_actor=0.5",
        "stage.batch_size=256",
        "rows_per_block=256",
    ]
    cfg = load_config(ProxRefineConfig, REPO / "configs" / "prox_refine.yaml", overrides)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        refine(cfg)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=640)
    parser.add_argument("--side", nargs=3, metavar=("CPUS", "CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(int(args.side[0]), args.side[1], args.side[2])
        return
    with tempfile.TemporaryDirectory() as tmp:
        n = write_corpus(Path(tmp) / "corpus", args.copies)
        baseline = {"label": "1 CPU", **run(1, Path(tmp) / "corpus", Path(tmp) / "out1")}
        candidate = {"label": "2 CPUs", **run(2, Path(tmp) / "corpus", Path(tmp) / "out2")}
    candidate["documents"] = baseline["documents"] = n
    path = write_result("prox_job", candidate, baseline, unit="documents/s", higher_is_better=True)
    print(
        f"2 CPUs {candidate['value']:.0f} docs/s vs 1 CPU {baseline['value']:.0f} docs/s "
        f"({candidate['value'] / baseline['value']:.2f}x, {n} documents) -> {path}"
    )


if __name__ == "__main__":
    main()
