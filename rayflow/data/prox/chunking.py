"""Split a document into the numbered chunks a chunk-level refining model reads, exactly as ProX does.

Every line (split on `\\n`) is prefixed with its global 0-based index, `[000]`, `[001]`, ... (3 digits, growing
past 999), with no space. Lines are packed greedily, in order, into chunks of at most `max_tokens` tokens of
the refining model's tokenizer, counted as ProX counts them: `len(tokenizer.encode(line))` per numbered line,
special tokens included. Programs written for every chunk are joined and run on the whole document, so line
numbers stay global.

A single line longer than `max_tokens` follows `long_line`:

* `own_chunk` (ProX's code, the default): it becomes a chunk of its own, which may exceed `max_tokens`;
* `truncate`: it becomes a chunk of its own cut to `max_tokens` tokens (the model sees its start);
* `skip` (ProX's paper, Algorithm 1): no chunk shows it; the model never sees it, so it is never removed.
"""

from __future__ import annotations

from typing import Literal

LongLinePolicy = Literal["own_chunk", "truncate", "skip"]


def number_lines(text: str) -> list[str]:
    return [f"[{i:03d}]{line}" for i, line in enumerate(text.split("\n"))]


def chunk_document(
    text: str, tokenizer, max_tokens: int = 1500, long_line: LongLinePolicy = "own_chunk"
) -> list[str]:
    """The chunks of `text` (each `\\n`-joined numbered lines), in order. `tokenizer` is a HF tokenizer."""
    lines = number_lines(text)
    counts = [len(ids) for ids in tokenizer(lines)["input_ids"]]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line, count in zip(lines, counts):
        if size + count <= max_tokens:
            current.append(line)
            size += count
            continue
        if current:
            chunks.append("\n".join(current))
        current, size = [], 0
        if count <= max_tokens:
            current, size = [line], count
        elif long_line == "own_chunk":
            chunks.append(line)
        elif long_line == "truncate":
            chunks.append(_truncate(line, tokenizer, max_tokens - (count - _plain_count(line, tokenizer))))
    if current:
        chunks.append("\n".join(current))
    return chunks


def _plain_count(line: str, tokenizer) -> int:
    return len(tokenizer(line, add_special_tokens=False)["input_ids"])


def _truncate(line: str, tokenizer, budget: int) -> str:
    ids = tokenizer(line, add_special_tokens=False)["input_ids"][: max(budget, 1)]
    return tokenizer.decode(ids)
