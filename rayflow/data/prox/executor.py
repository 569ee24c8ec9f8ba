"""Run ProX programs on documents, with the reference executor's semantics and decision rule.

Two readings (`ExecutorConfig.semantics`):

* `strict` (the default): programs are read with `ast` (`parser`), only valid keyword calls count, any
  characters may appear inside strings;
* `reference`: ProX's own executor, re-stated in `reference` (string splitting, keyword names never read,
  "drop" anywhere drops a document), so a corpus refined with ProX's released refiners gets ProX's decisions.

Doc level (`execute_doc_program`), strict: the document is dropped exactly when the program holds a valid
`drop_doc()` call. An empty or unreadable program keeps the document (`DocResult.parse_failed`).

Chunk level (`execute_chunk_program`), strict, as ProX's `execute_meta_operations`:

1. every `normalize` is applied, in program order, to the whole text (`str.replace`, all occurrences);
2. the `remove_lines` intervals (0-based, inclusive, line numbers of the original split on `\\n`) are removed;
   `remove_lines(all=True)` removes every line. Intervals are merged (touching ones too); a merged interval
   that starts past the last line is an error op, one that ends past it is clipped and is an error op too;
3. with r = words(out) / words(original), words being `str.split()` tokens:
   r <= 1 - `removal_ceiling` with fewer than `max_error_ops` errors -> dropped (`"ratio"`);
   otherwise `min_words` words or fewer left -> dropped (`"min_words"`);
   otherwise fewer than `max_error_ops` errors -> the refined text;
   otherwise -> the original text (`fallback`: the program is not trusted).
   A document with no words is dropped as `"empty"` (the reference divides by zero), in both readings.

Two reference quirks are kept on purpose, since refined corpora must match: `normalize(source_str=" ")`
(one argument) deletes every space, while the two-argument form never replaces `""` or `" "`.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Literal, NamedTuple

from pydantic import Field

from rayflow.config import Config
from rayflow.data.prox.parser import FUNCTIONS_DOC, parse_program, read_chunk_calls
from rayflow.data.prox.reference import reference_decision, reference_doc_keep, reference_operations

Semantics = Literal["strict", "reference"]


class ExecutorConfig(Config):
    """How programs are read, and the chunk-level decision rule; the thresholds' defaults are the reference's
    (threshold_1, threshold_2, error_op)."""

    semantics: Semantics = Field(
        "strict",
        description="strict: ast reading, only valid calls count; reference: ProX's string reading and "
        "decisions ('drop' anywhere drops a document, keyword names ignored)",
    )
    keep_ratio_floor: float = Field(0.0, ge=0.0, le=1.0, description="threshold_1: min words kept ratio")
    removal_ceiling: float = Field(
        0.95, ge=0.0, le=1.0, description="threshold_2: drop when more than this fraction of words is removed"
    )
    max_error_ops: int = Field(
        2, ge=1, description="error_op: this many error ops and the program is ignored"
    )
    min_words: int = Field(10, ge=0, description="drop when this many words or fewer remain")


DEFAULT_EXECUTOR = ExecutorConfig()
_START = itemgetter(0)


class DocResult(NamedTuple):
    keep: bool
    n_calls: int  # valid drop_doc/keep_doc calls
    n_error_ops: int
    n_unknown_calls: int

    @property
    def parse_failed(self) -> bool:
        """True for an empty program or one with no valid call: the document is kept, and counted."""
        return self.n_calls == 0


class ChunkResult(NamedTuple):
    text: str  # "" when dropped
    kept: bool
    n_error_ops: int
    drop_reason: str | None  # None, "empty", "ratio" or "min_words"
    fallback: bool = False  # kept, but as the original text: the program had too many error ops
    words_in: int = 0
    words_out: int = 0  # words of the returned text
    n_calls: int = 0
    n_unknown_calls: int = 0
    lines_removed: int = 0
    # (source, target) that changed the text, in order (reference semantics: every pair ProX records)
    normalizations: tuple[tuple[str, str], ...] = ()


def execute_doc_program(program: str, config: ExecutorConfig = DEFAULT_EXECUTOR) -> DocResult:
    """Decide whether a document stays, from its doc-level program (calls and errors are counted by the
    strict reading in both modes)."""
    parsed = parse_program(program, FUNCTIONS_DOC)
    if config.semantics == "reference":
        keep = reference_doc_keep(program)
    else:
        keep = not any(op[0] == "drop_doc" for op in parsed.ops)
    return DocResult(keep, len(parsed.ops), parsed.n_error_ops, parsed.n_unknown_calls)


def execute_chunk_program(text: str, program: str, config: ExecutorConfig = DEFAULT_EXECUTOR) -> ChunkResult:
    """Refine `text` with `program`: the chunk programs of one document, joined by newlines."""
    if config.semantics == "reference":
        return _reference_chunk(text, program, config)
    intervals, normalizations, remove_all, n_calls, n_error, n_unknown = read_chunk_calls(program)
    normalized = text
    applied: list[tuple[str, str]] = []
    for a, b in normalizations:
        # The reference: one argument always replaces (a " " deletes every space); two never replace ""/" ".
        if a and (b is None or a != " "):
            replaced = normalized.replace(a, b or "")
            if len(replaced) != len(normalized) or replaced != normalized:
                normalized = replaced
                applied.append((a, b or ""))

    words_in = len(text.split())
    applied = tuple(applied)
    if words_in == 0:
        return ChunkResult("", False, n_error, "empty", False, 0, 0, n_calls, n_unknown, 0, applied)
    processed = normalized
    if remove_all:
        # Every line goes: only the line count is needed (normalize never adds or removes a line break).
        n_lines = normalized.count("\n") + 1
        if intervals:
            n_error += _merge_and_clip(intervals, n_lines)[0]
        lines_removed, words_out, processed = n_lines, 0, ""
    elif intervals:
        lines = normalized.split("\n")
        errors, spans = _merge_and_clip(intervals, len(lines))
        n_error += errors
        lines_removed = 0
        if normalized is text:
            # Words never span lines, so words out = words in - words of the removed lines (usually few);
            # the refined text is joined only if it is returned.
            removed: list[str] = []
            for start, end in spans:
                lines_removed += end - start + 1
                removed.extend(lines[start : end + 1])
            words_out = words_in - len(" ".join(removed).split())
            processed = None
        else:
            for start, end in spans:
                lines_removed += end - start + 1
            processed = _without(lines, spans)
            words_out = len(processed.split())
    else:
        lines_removed = 0
        words_out = words_in if normalized is text else len(normalized.split())

    ratio = words_out / words_in
    trusted = n_error < config.max_error_ops
    if ratio <= 1 - config.removal_ceiling and trusted:
        return ChunkResult(
            "", False, n_error, "ratio", False, words_in, 0, n_calls, n_unknown, lines_removed, applied
        )
    if words_out <= config.min_words:
        return ChunkResult(
            "", False, n_error, "min_words", False, words_in, 0, n_calls, n_unknown, lines_removed, applied
        )
    if ratio >= config.keep_ratio_floor and trusted:
        if processed is None:
            processed = _without(lines, spans)
        return ChunkResult(
            processed,
            True,
            n_error,
            None,
            False,
            words_in,
            words_out,
            n_calls,
            n_unknown,
            lines_removed,
            applied,
        )
    return ChunkResult(
        text, True, n_error, None, True, words_in, words_in, n_calls, n_unknown, lines_removed, applied
    )


def _reference_chunk(text: str, program: str, config: ExecutorConfig) -> ChunkResult:
    """ProX's `execute_meta_operations`, with its figures; a text with no words is dropped as "empty"."""
    run = reference_operations(text, program)
    calls = (run.n_ops, 0, run.lines_removed, run.normalizations)
    if not text or text.isspace():
        return ChunkResult("", False, run.n_error_ops, "empty", False, 0, 0, *calls)
    out, reason, fallback, words_in, words_out = reference_decision(
        text, run, config.keep_ratio_floor, config.removal_ceiling, config.max_error_ops
    )
    return ChunkResult(
        out,
        reason is None,
        run.n_error_ops,
        reason,
        fallback,
        words_in,
        words_out if reason is None else 0,
        *calls,
    )


def _merge_and_clip(intervals: list[tuple[int, int]], n_lines: int) -> tuple[int, list[tuple[int, int]]]:
    """`(error ops, spans)`: intervals merged as the reference merges them (touching ones too), each one that
    starts or ends past the last line an error op; spans = the merged intervals clipped to the document, sorted,
    disjoint (their lines are exactly the lines the intervals name)."""
    if len(intervals) > 1:
        # By start only, stable: ties keep program order, which decides how inverted intervals merge.
        intervals = sorted(intervals, key=_START)
    errors = 0
    spans = []
    last = n_lines - 1
    start, end = intervals[0]
    for next_start, next_end in (*intervals[1:], (None, None)):
        if next_start is not None and next_start <= end + 1:
            end = max(end, next_end)
            continue
        if start > last or end > last:
            errors += 1
        clipped_start, clipped_end = max(start, 0), min(end, last)
        if clipped_start <= clipped_end:
            spans.append((clipped_start, clipped_end))
        start, end = next_start, next_end
    return errors, spans


def _without(lines: list[str], spans: list[tuple[int, int]]) -> str:
    """`lines` joined by newlines, less the lines of `spans` (sorted, disjoint, inclusive)."""
    kept, at = [], 0
    for start, end in spans:
        kept.extend(lines[at:start])
        at = end + 1
    kept.extend(lines[at:])
    return "\n".join(kept)
