"""ProX's released executor (GAIR-NLP/ProX, `utils/doc_utils.py` and `utils/chunk_utils.py`), re-stated.

It is plain string splitting: no `eval`, no `ast`. An argument list is the text between the first `(` and the
first `)`, split on `,`; each value is the text after the first `=` (the keyword's name is never read, so
`remove_lines(start=0, end=1)` works and a third argument such as `reason=` is ignored), with `"` stripped from
both ends. So commas, parentheses and `=` inside strings cut the string there, and single quotes are kept.

It is three things in rayflow: the executor's `semantics: reference` mode (`reference_chunk_result`,
`reference_doc_keep`), which reproduces ProX's decisions; the oracle the strict executor is tested against on
programs ProX reads correctly; and the baseline of `benchmarks/prox_executor.py` (`reference_chunk_execute`).
"""

from __future__ import annotations

from typing import NamedTuple


def reference_doc_keep(program: str) -> bool:
    """ProX's doc rule: keep unless the program text contains "drop" anywhere (`drop_doc`, a comment, prose)."""
    return "drop" not in program.strip(" ")


class ReferenceRun(NamedTuple):
    """What ProX's `execute_operations` computes for one program, before the decision rule."""

    processed: str  # the normalised text less the removed lines
    n_error_ops: int
    n_ops: int  # operations that took effect or were recorded (normalize pairs, intervals, all=True)
    lines_removed: int
    normalizations: tuple[tuple[str, str], ...]  # (source, target) in program order, as ProX records them


def reference_operations(text: str, program: str) -> ReferenceRun:
    """ProX's `execute_operations` on `program.strip(" ").split("\\n")`: normalize first, then line removal."""
    normalized = text
    n_lines = len(text.split("\n"))
    to_remove: set[int] = set()
    intervals: list[tuple[int, int]] = []
    pairs: list[tuple[str, str]] = []
    errors = n_ops = 0
    for line in program.strip(" ").split("\n"):
        if line.startswith("remove_lines") and "all=True" not in line:
            params, errors = _arguments(line, errors)
            if params is None:
                continue
            try:
                start = int(params[0].split("=")[1])
                end = int(params[1].split("=")[1])
            except (IndexError, ValueError):
                errors += 1
                continue
            intervals.append((start, end))
            to_remove.update(range(start, end + 1))
            n_ops += 1
        elif line.startswith("normalize"):
            params, errors = _arguments(line, errors)
            if params is None:
                continue
            if len(params) == 1:
                try:
                    source = params[0].split("=")[1].strip('"')
                except IndexError:
                    errors += 1
                    continue
                normalized = normalized.replace(source, "")
                pairs.append((source, ""))
                n_ops += 1
            elif len(params) == 2:
                try:
                    source = params[0].split("=")[1].strip('"')
                    target = params[1].split("=")[1].strip('"')
                except IndexError:
                    errors += 1
                    continue
                if source not in (" ", ""):
                    normalized = normalized.replace(source, target)
                pairs.append((source, target))
                n_ops += 1
        elif line.startswith("remove_lines"):
            to_remove = set(range(n_lines))
            n_ops += 1

    lines = normalized.split("\n")
    kept = [line for i, line in enumerate(lines) if i not in to_remove]
    for start, end in _merge(intervals):
        if start >= len(lines) or end >= len(lines):
            errors += 1
    return ReferenceRun("\n".join(kept), errors, n_ops, len(lines) - len(kept), tuple(pairs))


def reference_decision(
    text: str, run: ReferenceRun, threshold_1: float = 0.0, threshold_2: float = 0.95, error_op: int = 2
) -> tuple[str, str | None, bool, int, int]:
    """ProX's `execute_meta_operations` rule: `(output, drop reason, fallback, words in, words out)`.

    Words are `str.split()` tokens; the drop reason is None (kept), "ratio" or "min_words". Raises
    ZeroDivisionError on a text with no words, as ProX does.
    """
    words_out, words_in = len(run.processed.split()), len(text.split())
    if words_out / words_in <= 1 - threshold_2 and run.n_error_ops < error_op:
        return "", "ratio", False, words_in, words_out
    if words_out <= 10:
        return "", "min_words", False, words_in, words_out
    if words_out / words_in >= threshold_1 and run.n_error_ops < error_op:
        return run.processed, None, False, words_in, words_out
    return text, None, True, words_in, words_in


def reference_chunk_execute(
    text: str, program: str, threshold_1: float = 0.0, threshold_2: float = 0.95, error_op: int = 2
) -> tuple[str, int]:
    """`(refined text, error ops)` as ProX's `execute_meta_operations` returns the text; raises
    ZeroDivisionError on a text with no words, as ProX does."""
    run = reference_operations(text, program)
    return reference_decision(text, run, threshold_1, threshold_2, error_op)[0], run.n_error_ops


def _arguments(line: str, errors: int) -> tuple[list[str] | None, int]:
    """The text between the first `(` and the first `)` split on `,` (to the last-but-one char without `)`)."""
    try:
        open_at = line.index("(") + 1
    except ValueError:
        return None, errors + 1
    try:
        close_at = line.index(")")
    except ValueError:
        errors += 1
        close_at = -1
    return line[open_at:close_at].split(","), errors


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals, key=lambda iv: iv[0]):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
