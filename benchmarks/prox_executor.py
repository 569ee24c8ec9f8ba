"""ProX executor throughput per program mix: rayflow's ast-safe executor (candidate) vs the reference's string
splitting (baseline, `rayflow.data.prox.reference`), on the same (document, program) pairs.

Documents are the sample web corpus's, replicated; programs are written in the refining model's style, one mix
per row:

* `remove_lines`: only `remove_lines(line_start=, line_end=)` calls (some past the end, as models write them);
* `normalize`: only `normalize` calls, one- and two-argument;
* `remove_all`: programs holding `remove_lines(all=True)`, alone or with other calls;
* `normalize+remove_lines`: both kinds interleaved;
* `whole`: the rules generator's programs and the synthetic kinds above, comments and `keep_chunk()` mixed in.

Every program is one the reference reads correctly (no `,` `)` `=` inside strings), so the outputs must agree,
and the script stops if they do not. The top-level `ratio` is the `whole` mix's; `mixes` holds one row per mix.
A rate is documents per CPU second of the benchmark process, the best of `--repeats` interleaved passes over
the mix's pairs; `ratio` = reference CPU seconds / rayflow CPU seconds on the same pairs (> 1: rayflow faster).

Run: `python benchmarks/prox_executor.py [--docs 4000] [--repeats 7]`.
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
from _common import RESULTS, environment

from rayflow.data.prox import execute_chunk_program
from rayflow.data.prox.reference import reference_chunk_execute
from rayflow.data.prox.rules import RulesConfig, RulesGenerator

# A string argument holding , ) or = : the reference cuts it there, so the outputs are meant to differ.
READ_WRONG_BY_REFERENCE = re.compile(r'"[^"\n]*[,)=][^"\n]*"')
SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "web_corpus.jsonl"


def _remove(rng: random.Random, lines: list[str]) -> str:
    start = rng.randrange(len(lines) + 2)
    return f"remove_lines(line_start={start}, line_end={start + rng.randrange(4)})"


def _normalize(rng: random.Random, lines: list[str]) -> str:
    words = rng.choice(lines).split() or ["the"]
    source = " ".join(words[: rng.randint(1, 3)])
    source = re.sub(r'[",)=]', "", source)
    if not source:
        return "keep_chunk()"
    if rng.random() < 0.3:
        return f'normalize(source_str="{source}")'
    return f'normalize(source_str="{source}", target_str="{source.lower() if rng.random() < 0.5 else ""}")'


def _program(rng: random.Random, text: str, kinds: tuple[str, ...], n_calls: tuple[int, int]) -> str:
    lines = text.split("\n")
    calls = []
    for _ in range(rng.randint(*n_calls)):
        kind = rng.choice(kinds)
        if kind == "remove":
            calls.append(_remove(rng, lines))
        elif kind == "normalize":
            calls.append(_normalize(rng, lines))
        elif kind == "comment":
            calls.append("# boilerplate below")
        elif kind == "keep":
            calls.append("keep_chunk()")
    return "\n".join(calls)


def _remove_all(rng: random.Random, text: str) -> str:
    others = _program(rng, text, ("remove", "normalize", "comment"), (0, 3)).split("\n")
    others.insert(rng.randrange(len(others) + 1), "remove_lines(all=True)")
    return "\n".join(line for line in others if line)


def _whole(rng: random.Random, text: str, rules: RulesGenerator) -> str:
    if rng.random() < 0.5:
        return rules.chunk_programs([text])[0].program
    if rng.random() < 0.05:
        return _remove_all(rng, text)
    weights = ("remove",) * 12 + ("normalize",) * 5 + ("comment",) * 2 + ("keep",)
    return _program(rng, text, weights, (1, 6))


def cases(mix: str, n_docs: int) -> list[tuple[str, str]]:
    """`n_docs` (document, program) pairs of one mix, seeded: the same pairs on every run."""
    rng = random.Random(f"prox-executor-{mix}")
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text().splitlines()]
    rules = RulesGenerator(RulesConfig())
    writers = {
        "remove_lines": lambda t: _program(rng, t, ("remove",), (1, 6)),
        "normalize": lambda t: _program(rng, t, ("normalize",), (1, 4)),
        "remove_all": lambda t: _remove_all(rng, t),
        "normalize+remove_lines": lambda t: _program(rng, t, ("remove", "normalize"), (2, 6)),
        "whole": lambda t: _whole(rng, t, rules),
    }
    out = []
    while len(out) < n_docs:
        text = rng.choice(texts)
        program = writers[mix](text)
        if not READ_WRONG_BY_REFERENCE.search(program):
            out.append((text, program))
    return out


MIXES = ("remove_lines", "normalize", "remove_all", "normalize+remove_lines", "whole")


def measure(fns: dict, pairs, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` CPU seconds (this process's, so time other processes take on a shared machine is not
    counted) of each function over `pairs`, the functions interleaved so that what load remains hits both."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.process_time()
            for text, program in pairs:
                fn(text, program)
            best[name] = min(best[name], time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=4000, help="pairs per mix")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = []
    for mix in MIXES:
        pairs = cases(mix, args.docs)
        agree = sum(execute_chunk_program(t, p).text == reference_chunk_execute(t, p)[0] for t, p in pairs)
        if agree != len(pairs):
            raise SystemExit(f"{mix}: executors disagree on {len(pairs) - agree} of {len(pairs)} documents")
        seconds = measure(
            {"reference": reference_chunk_execute, "rayflow": execute_chunk_program}, pairs, args.repeats
        )
        rows.append({
            "mix": mix,
            "documents": len(pairs),
            "rayflow_docs_per_s": round(len(pairs) / seconds["rayflow"], 1),
            "reference_docs_per_s": round(len(pairs) / seconds["reference"], 1),
            "ratio": round(seconds["reference"] / seconds["rayflow"], 3),
            "outputs_agree": f"{agree}/{len(pairs)}",
        })  # fmt: skip
        print(
            f"{mix:24s} rayflow {rows[-1]['rayflow_docs_per_s']:9.0f} docs/s  reference "
            f"{rows[-1]['reference_docs_per_s']:9.0f} docs/s  {rows[-1]['ratio']:.2f}x  agree {agree}/{len(pairs)}"
        )
    whole = rows[-1]
    result = {
        "name": "prox_executor",
        "candidate": {
            "label": "rayflow ast executor (strict semantics), whole mix",
            "value": whole["rayflow_docs_per_s"],
            "documents": whole["documents"],
        },
        "baseline": {
            "label": "reference string splitting, whole mix",
            "value": whole["reference_docs_per_s"],
            "documents": whole["documents"],
        },
        "ratio": whole["ratio"],
        "ratio_definition": "reference CPU seconds / rayflow CPU seconds over the same pairs (best of repeats); "
        "> 1: rayflow is faster",
        "min_ratio": min(r["ratio"] for r in rows),
        "mixes": rows,
        "unit": "documents/s",
        "higher_is_better": True,
        "env": environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "prox_executor.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"whole mix {whole['ratio']:.2f}x, slowest mix {result['min_ratio']:.2f}x -> {path}")


if __name__ == "__main__":
    main()
