"""The reference ProX executor's algorithm, re-stated: plain string splitting, no `ast`.

This is the oracle that `execute_chunk_program` / `execute_doc_program` are tested against, and the baseline of
`benchmarks/prox_executor.py`. It follows the behaviour described for ProX's `execute_meta_operations`
(doc level: a program containing the substring "drop" drops the document), including its limits: an argument
is the text between the first `(` and the first `)`, split on `,`, each value taken after the first `=`, so
commas, parentheses and `=` inside strings break it, and single quotes are not stripped. Do not use it to
refine data; `rayflow.data.prox.executor` is the safe reading.
"""

from __future__ import annotations


def reference_doc_keep(program: str) -> bool:
    """The reference's doc rule: keep unless the program text contains "drop" anywhere (comments too)."""
    return "drop" not in program.strip(" ")


def reference_chunk_execute(
    text: str, program: str, threshold_1: float = 0.0, threshold_2: float = 0.95, error_op: int = 2
) -> tuple[str, int]:
    """`(refined text, error ops)`; raises ZeroDivisionError on a text with no words, as the reference does."""
    normalized = text
    n_lines = len(text.split("\n"))
    to_remove: set[int] = set()
    intervals: list[tuple[int, int]] = []
    errors = 0
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
            elif len(params) == 2:
                try:
                    source = params[0].split("=")[1].strip('"')
                    target = params[1].split("=")[1].strip('"')
                except IndexError:
                    errors += 1
                    continue
                if source not in (" ", ""):
                    normalized = normalized.replace(source, target)
        elif line.startswith("remove_lines"):
            to_remove = set(range(n_lines))

    lines = normalized.split("\n")
    processed = "\n".join(line for i, line in enumerate(lines) if i not in to_remove)
    for start, end in _merge(intervals):
        if start >= len(lines) or end >= len(lines):
            errors += 1

    words_out, words_in = len(processed.split()), len(text.split())
    if words_out / words_in <= 1 - threshold_2 and errors < error_op:
        return "", errors
    if words_out <= 10:
        return "", errors
    if words_out / words_in >= threshold_1 and errors < error_op:
        return processed, errors
    return text, errors


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
