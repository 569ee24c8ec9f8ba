"""Decontamination scan throughput: the job (candidate) vs a plain Python 13-gram set scan (baseline), corpus MB/s
per core on the same data with the same gpt3 verdicts; and the job on 2 CPUs vs 1.

Data (generated, deterministic): 1,000 evaluation examples of ~40 words drawn from a Zipf vocabulary of invented
words, and a corpus of `--mb` MB in 32 JSONL files of 60-400-word documents from the same vocabulary (3% hold
a planted copy of an example, verbatim or upper-cased with punctuation; 2% have accents and CJK text, so both
tokenisation paths run). The baseline reads every line (`json.loads`), tokenises it (`rules.tokenize`) and looks
up every 13-gram in a set of the examples' 13-grams, in a process pinned to one core. The candidate is the whole
job (`run(cfg)`, every rule: 8-, 10- and 13-grams) in a fresh process pinned with `taskset` to 1 or 2 cores, on
a local Ray told it has that many CPUs, one scan actor per CPU. Each side's gpt3 verdicts must agree.

`ratio` = the job's wall-clock MB/s per core on 1 core over the plain scan's (both read, tokenise and look up).
The job's figure is its steady rate: corpus bytes committed between its first and last output part (their
modification times) over that time, so Ray's start, the actors' start and the first part are out of it and
every other part's reading, scanning, Ray Data hand-off and commit are in. The whole scan phase (start-up
included) is beside it (`phase_mb_per_s`), as are CPU-seconds (`cpu_ratio`: the scan actors' `scan_cpu_s`,
reading and scanning, since their reader tokenises, vs the plain loop's tokenising and lookups, its json.loads
left out) and the 2-CPU run.
Run: `python benchmarks/decontam_scan.py [--mb 256]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
N_EXAMPLES, FILES = 1000, 32


def make_data(root: Path, mb: float, seed: int = 0) -> float:
    """Write eval.jsonl and corpus/*.jsonl under `root`; returns the corpus size in MB (UTF-8 text bytes)."""
    rnd = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "so", "vi", "pe", "du", "an", "or", "el", "is", "um"]
    vocab = sorted({"".join(rnd.choices(syllables, k=rnd.randint(1, 4))) for _ in range(30000)})
    rnd.shuffle(vocab)
    weights = [1 / (i + 1) for i in range(len(vocab))]

    def words(n: int) -> list[str]:
        return rnd.choices(vocab, weights, k=n)

    examples = [" ".join(words(rnd.randint(30, 50))) for _ in range(N_EXAMPLES)]
    (root / "eval.jsonl").write_text("".join(json.dumps({"id": i, "question": q, "answer": ""}) + "\n"
                                             for i, q in enumerate(examples)))  # fmt: skip
    corpus = root / "corpus"
    corpus.mkdir()
    target, size, d = mb * 1e6, 0, 0
    lines: list[list[str]] = [[] for _ in range(FILES)]
    while size < target:
        w = words(rnd.randint(60, 400))
        r = rnd.random()
        if r < 0.03:
            copy = rnd.choice(examples[:300]).split()
            copy = copy if r < 0.015 else [x.upper() + rnd.choice(["", ",", "!"]) for x in copy]
            w[rnd.randint(0, len(w)) : 0] = copy
        elif r < 0.05:
            w[5:5] = ["café", "naïve", "東京の夏", "Ｆｕｌｌ"]
        text = " ".join(w).capitalize() + "."
        lines[d % FILES].append(json.dumps({"id": f"d{d}", "text": text}, ensure_ascii=False) + "\n")
        size += len(text.encode())
        d += 1
    for f, part in enumerate(lines):
        (corpus / f"part-{f:02d}.jsonl").write_text("".join(part), encoding="utf-8")
    return size / 1e6


def baseline(root: str) -> None:
    """The plain scan (run pinned to one core): prints JSON with its seconds and the dirty example ids."""
    from rayflow.data.decontam.rules import tokenize

    start = time.perf_counter()
    examples = [json.loads(line) for line in (Path(root) / "eval.jsonl").read_text().splitlines()]
    grams: dict[tuple, set[int]] = {}
    for ex in examples:
        toks = tokenize(ex["question"] + "\n" + ex["answer"])
        for i in range(len(toks) - 12):
            grams.setdefault(tuple(toks[i : i + 13]), set()).add(ex["id"])
    dirty: set[int] = set()
    n_bytes, cpu_s = 0, 0.0
    for path in sorted((Path(root) / "corpus").glob("*.jsonl")):
        with open(path, encoding="utf-8") as lines:
            texts = [json.loads(line)["text"] for line in lines]
        n_bytes += sum(len(t.encode()) for t in texts)
        cpu = time.process_time()
        for text in texts:
            toks = tokenize(text)
            for i in range(len(toks) - 12):
                found = grams.get(tuple(toks[i : i + 13]))
                if found:
                    dirty |= found
        cpu_s += time.process_time() - cpu
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "scan_cpu_s": cpu_s, "mb": n_bytes / 1e6, "dirty": sorted(dirty)}))


def job(cpus: int, root: str) -> None:
    """The job on a local Ray of `cpus` CPUs (run pinned to as many cores)."""
    import ray

    from rayflow.data.decontam.evalsets import EvalSetConfig
    from rayflow.data.decontam.pipeline import DecontamConfig, run

    cfg = DecontamConfig(
        eval_sets=[EvalSetConfig(name="bench", path=f"{root}/eval.jsonl", split_field=None)],
        corpus=f"{root}/corpus",
        output_dir=f"{root}/out{cpus}",
        scan={"actors": cpus, "cpus_per_actor": 1.0},
        block_bytes=4 << 20,
    )
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        run(cfg)
    finally:
        ray.shutdown()


def steady_mb_per_s(out: Path) -> dict:
    """MB/s between the first and the last committed data part (the first part's bytes not counted)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = sorted((p.stat().st_mtime, pc.sum(pq.read_table(p, columns=["n_bytes"])["n_bytes"]).as_py())
                   for p in (out / "data").glob("part-*.parquet"))  # fmt: skip
    seconds = parts[-1][0] - parts[0][0]
    return {"value": sum(b for _, b in parts[1:]) / 1e6 / seconds, "parts": len(parts), "seconds": round(seconds, 3)}


def pinned(cores: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    cmd = ["taskset", "-c", ",".join(map(str, range(cores))), sys.executable, __file__, *args]
    proc = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=256.0, help="corpus size in MB")
    parser.add_argument("--baseline", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--job", nargs=2, metavar=("CPUS", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        return baseline(args.baseline)
    if args.job:
        return job(int(args.job[0]), args.job[1])
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        mb = make_data(Path(tmp), args.mb)
        base = json.loads(pinned(1, "--baseline", tmp).stdout.strip().splitlines()[-1])
        sides = {}
        for cpus in (1, 2):
            pinned(cpus, "--job", str(cpus), tmp)
            out = Path(tmp) / f"out{cpus}"
            verdicts = pq.read_table(out / "verdicts.parquet", columns=["id", "gpt3_dirty"]).to_pylist()
            dirty = sorted(int(v["id"]) for v in verdicts if v["gpt3_dirty"])
            if dirty != base["dirty"]:
                raise SystemExit(f"verdicts differ on {cpus} CPU(s): {len(dirty)} vs {len(base['dirty'])} dirty")
            run = json.loads((out / "run.json").read_text())
            phase = {"seconds": run["phases"]["scan"]}
            steady = steady_mb_per_s(out)
            summary = json.loads((out / "summary.json").read_text())
            sides[cpus] = {"label": f"job on {cpus} core(s): steady wall MB/s per core",
                           "value": steady["value"] / cpus, "wall_mb_per_s": steady["value"], "steady": steady,
                           "phase_s": phase["seconds"], "phase_mb_per_s": mb / phase["seconds"],
                           "phase_mb_per_s_per_core": mb / phase["seconds"] / cpus,
                           "scan_cpu_s": summary["scan_cpu_s"], "scan_mb_per_cpu_s": summary["scan_mb_per_cpu_s"]}  # fmt: skip
    baseline_side = {"label": "plain Python 13-gram set scan on 1 core: wall MB/s (reading included)",
                     "value": mb / base["seconds"], "wall_s": base["seconds"], "scan_cpu_s": base["scan_cpu_s"],
                     "scan_mb_per_cpu_s": mb / base["scan_cpu_s"]}  # fmt: skip
    candidate = {**sides[1], "corpus_mb": mb, "dirty_examples": len(base["dirty"]), "two_cpus": sides[2],
                 "two_vs_one_cpu_wall": sides[2]["wall_mb_per_s"] / sides[1]["wall_mb_per_s"],
                 "two_vs_one_cpu_phase": sides[2]["phase_mb_per_s"] / sides[1]["phase_mb_per_s"],
                 "phase_ratio": sides[1]["phase_mb_per_s"] / baseline_side["value"],
                 "cpu_ratio": sides[1]["scan_mb_per_cpu_s"] / baseline_side["scan_mb_per_cpu_s"]}  # fmt: skip
    path = write_result("decontam_scan", candidate, baseline_side, unit="corpus MB/s per core", higher_is_better=True)
    print(
        f"job {sides[1]['value']:.1f} MB/s per core (steady, 1 core) vs plain scan {baseline_side['value']:.1f} MB/s: "
        f"{sides[1]['value'] / baseline_side['value']:.2f}x; whole scan phase {candidate['phase_ratio']:.2f}x; "
        f"scan CPU {candidate['cpu_ratio']:.2f}x; 2 cores {sides[2]['wall_mb_per_s']:.1f} MB/s "
        f"({candidate['two_vs_one_cpu_wall']:.2f}x 1 core); {mb:.1f} MB, {len(base['dirty'])} dirty -> {path}"
    )


if __name__ == "__main__":
    main()
