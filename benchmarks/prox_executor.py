"""ProX executor throughput: rayflow's ast-safe executor (candidate) vs the reference's string splitting (baseline).

Both run the same (document, program) pairs: the sample web corpus, replicated, with programs from the rules
generator plus synthetic programs in the model's style (remove_lines runs, normalize calls, keep_chunk,
comments), all of them programs the reference reads correctly, so the outputs must agree, and the script
checks that they do. Run: `python benchmarks/prox_executor.py [--docs 4000] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from rayflow.data.prox import execute_chunk_program
from rayflow.data.prox.reference import reference_chunk_execute
from rayflow.data.prox.rules import RulesConfig, RulesGenerator

# A string argument holding , ) or = : the reference cuts it there, so the outputs are meant to differ.
READ_WRONG_BY_REFERENCE = re.compile(r'"[^"\n]*[,)=][^"\n]*"')
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "web_corpus.jsonl"


def synthetic_program(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    calls = []
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.6:
            start = rng.randrange(len(lines) + 2)
            calls.append(f"remove_lines(line_start={start}, line_end={start + rng.randrange(4)})")
        elif kind < 0.85:
            words = rng.choice(lines).split() or ["the"]
            source = " ".join(words[: rng.randint(1, 3)]).replace('"', "").replace(",", "").replace(")", "")
            source = source.replace("=", "")
            calls.append(f'normalize(source_str="{source}", target_str="")' if source else "keep_chunk()")
        elif kind < 0.95:
            calls.append("# boilerplate below")
        else:
            calls.append("keep_chunk()")
    return "\n".join(calls)


def cases(n_docs: int) -> list[tuple[str, str]]:
    rng = random.Random(0)
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    rules = RulesGenerator(RulesConfig())
    out = []
    while len(out) < n_docs:
        text = rng.choice(texts)
        program = (
            rules.chunk_programs([text])[0].program if rng.random() < 0.5 else synthetic_program(rng, text)
        )
        if not READ_WRONG_BY_REFERENCE.search(program):
            out.append((text, program))
    return out


def measure(fns: dict, pairs, repeats: int) -> dict[str, dict]:
    """Best-of-`repeats` rate of each function, interleaved so that load from other processes hits both."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for text, program in pairs:
                fn(text, program)
            best[name] = min(best[name], time.perf_counter() - start)
    return {
        name: {"value": len(pairs) / t, "documents": len(pairs), "seconds": round(t, 4)}
        for name, t in best.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    pairs = cases(args.docs)
    agree = sum(execute_chunk_program(t, p).text == reference_chunk_execute(t, p)[0] for t, p in pairs)
    if agree != len(pairs):
        raise SystemExit(f"executors disagree on {len(pairs) - agree} of {len(pairs)} documents")
    rates = measure(
        {"reference": reference_chunk_execute, "rayflow": execute_chunk_program}, pairs, args.repeats
    )
    baseline = {"label": "reference string splitting", **rates["reference"]}
    candidate = {"label": "rayflow ast executor (fast path)", **rates["rayflow"]}
    candidate["agreement"] = agree / len(pairs)
    path = write_result("prox_executor", candidate, baseline, unit="documents/s", higher_is_better=True)
    print(
        f"rayflow {candidate['value']:.0f} docs/s vs reference {baseline['value']:.0f} docs/s "
        f"({candidate['value'] / baseline['value']:.2f}x, outputs agree on {agree}/{len(pairs)}) -> {path}"
    )


if __name__ == "__main__":
    main()
