"""Index building scaling: embedded chunks/s of the build_index job with 2 embedding actors vs 1.

Each side runs the whole job (`configs/build_index.yaml`: the offline all-MiniLM-L6-v2, batches of 32
documents) in a fresh process pinned with `taskset` to as many cores as it has actors, on a local Ray told it
has one more CPU than actors (the extra one for the read and write tasks), one CPU (so one torch thread) per
actor, over the shipped papers replicated `--copies` times under new ids. Rate: chunks/s at steady state, from
the commit times of the output parts (Ray start-up, model loading and the first part excluded).
Run: `python benchmarks/build_index.py [--copies 8]`.
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

REPO = Path(__file__).resolve().parents[1]
PAPERS = REPO / "examples" / "papers" / "papers.jsonl"

SIDE = """
import json, sys
import ray
from rayflow.config import load_config
from rayflow.data.build_index import BuildIndexConfig, run
actors, out, corpus = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ray.init(num_cpus=actors + 1, include_dashboard=False, log_to_driver=False)  # +1: read/write tasks
cfg = load_config(BuildIndexConfig, "configs/build_index.yaml", [
    f"input={corpus}", f"output_dir={out}", "num_shards=1", f"stage.actors={actors}", "stage.cpus_per_actor=1",
    "read_cpus=0.25", "rows_per_block=32"])
print(json.dumps(run(cfg).summary))
"""


def write_corpus(path: Path, copies: int) -> int:
    rows = [json.loads(line) for line in PAPERS.read_text().splitlines()]
    with open(path, "w") as out:
        for c in range(copies):
            out.writelines(json.dumps({**r, "doc_id": f"{r['doc_id']}-{c}"}) + "\n" for r in rows)
    return copies * len(rows)


def side(actors: int, corpus: Path, work: Path) -> dict:
    cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:actors])
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        ["taskset", "-c", cores, sys.executable, "-c", SIDE, str(actors), str(work / f"out{actors}"), str(corpus)],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "label": f"{actors} embedding actor(s) on {actors} core(s)",
        "value": summary["this_run"]["steady_chunks_per_s"],
        "chunks": summary["chunks"],
        "wall_s": summary["this_run"]["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=8)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs 2 cores")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        docs = write_corpus(work / "papers.jsonl", args.copies)
        baseline = side(1, work / "papers.jsonl", work)
        candidate = side(2, work / "papers.jsonl", work)
    path = write_result("build_index", candidate, baseline, unit="chunks/s", higher_is_better=True)
    print(f"{docs} documents: {candidate['value']:.1f} vs {baseline['value']:.1f} chunks/s -> {path}")


if __name__ == "__main__":
    main()
