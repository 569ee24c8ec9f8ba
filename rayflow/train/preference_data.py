"""Training data for SFT, the DPO family and WSPO: read, validate, tokenise. Plain Python, no Ray.

Input: JSONL or Parquet (a file, or a directory of `*.jsonl` / `*.json` / `*.parquet`), one example per row.

- Preference rows: `{"prompt", "chosen", "rejected"}`. Each field is a string, or chat messages:
  * `prompt` a string, `chosen`/`rejected` message lists ending with the assistant turn
    (UltraFeedback-binarized: `chosen = [{"role": "user", ...}, {"role": "assistant", ...}]`): the messages before
    the final assistant turn are the prompt, rendered with the model's chat template;
  * `prompt` a message list, `chosen`/`rejected` a string or a one-message assistant list (TRL's conversational
    layout).
  A string prompt is used as raw text (no template), as in TRL's standard layout.
- Response rows (SFT, WSPO): `{"prompt", "response"}`, same conventions; preference rows also work (the chosen side).
- `id` is optional; a row without one gets a stable id from its content.

Every response gets the tokenizer's EOS appended, so models learn to stop. Bad rows (unreadable, missing or empty
field, prompt over `max_prompt_length`, sequence over `max_length`) become error records `{source, row, reason}`;
with `truncate_responses` an over-long response is cut to fit instead and counted in the stats, never silently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rayflow.config import Config
from rayflow.jsonl import loads_object

Kind = Literal["preference", "response"]
_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataConfig(Config):
    """Where the examples are and how long they may be (in tokens of the trained model)."""

    train: str = Field(..., description="JSONL/Parquet file or directory")
    eval: str | None = Field(None, description="held-out file; None = split eval_fraction off train")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of train held out when eval is None")
    max_length: int = Field(512, ge=2, description="prompt + response tokens")
    max_prompt_length: int = Field(256, ge=1, description="prompt tokens; longer prompts are rejected rows")
    truncate_responses: bool = Field(
        False, description="cut over-long responses (counted) instead of rejecting"
    )


class RowError(ValueError):
    """A row that cannot be used; the message is the reason recorded in errors/."""


@dataclass(frozen=True)
class Example:
    """One tokenised example. `rejected_ids` is None for response rows. `prompt` is the text or the messages."""

    id: str
    prompt: str | list[dict[str, str]]
    chosen: str
    rejected: str | None
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int] | None
    truncated: bool = False


def read_rows(path: str | Path) -> Iterator[tuple[str, int, dict[str, Any] | None, str | None]]:
    """Yield `(source, row, obj, error)` for every row: row is 1-based (the line number for JSONL)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    files = sorted(f for f in root.rglob("*") if f.suffix in _SUFFIXES) if root.is_dir() else [root]
    if not files:
        raise FileNotFoundError(f"no {'/'.join(_SUFFIXES)} files under {str(path)!r}")
    for file in files:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            for i, obj in enumerate(pq.read_table(file).to_pylist(), start=1):
                yield str(file), i, obj, None
            continue
        with open(file, encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                obj, error = loads_object(line)
                yield str(file), i, obj, error


def parse_row(obj: dict[str, Any], kind: Kind) -> tuple[str | list[dict[str, str]], str, str | None]:
    """`(prompt, chosen_or_response, rejected)` of one row; raises `RowError` naming the field."""
    if kind == "response" and "response" in obj:
        prompt, response = _split_turn(obj.get("prompt"), obj["response"], "response")
        return prompt, response, None
    if "chosen" not in obj:
        wanted = "'response' (or 'chosen')" if kind == "response" else "'chosen'"
        raise RowError(f"missing field {wanted}")
    prompt, chosen = _split_turn(obj.get("prompt"), obj["chosen"], "chosen")
    if kind == "response":
        return prompt, chosen, None
    if "rejected" not in obj:
        raise RowError("missing field 'rejected'")
    prompt_r, rejected = _split_turn(obj.get("prompt"), obj["rejected"], "rejected")
    if prompt_r != prompt:
        raise RowError("'chosen' and 'rejected' conversations have different prompts")
    return prompt, chosen, rejected


def _split_turn(prompt: Any, answer: Any, name: str) -> tuple[str | list[dict[str, str]], str]:
    """Resolve the prompt (text or messages) and the final assistant text of one answer field."""
    if isinstance(answer, list):
        if not answer or not all(_is_message(m) for m in answer):
            raise RowError(
                f"field {name!r} must be a string or a non-empty list of {{role, content}} messages"
            )
        if answer[-1]["role"] != "assistant":
            raise RowError(
                f"field {name!r}: the last message must be the assistant's, got {answer[-1]['role']!r}"
            )
        history, text = answer[:-1], answer[-1]["content"]
        if history:  # UltraFeedback layout: the conversation carries the prompt
            prompt = [dict(m) for m in history]
        elif prompt is None:
            raise RowError("missing field 'prompt'")
    elif isinstance(answer, str):
        text = answer
    elif answer is None:
        raise RowError(f"missing field {name!r}")
    else:
        raise RowError(f"field {name!r} must be a string or a list of messages, got {type(answer).__name__}")
    if prompt is None:
        raise RowError("missing field 'prompt'")
    if isinstance(prompt, list):
        if not prompt or not all(_is_message(m) for m in prompt):
            raise RowError("field 'prompt' must be a string or a non-empty list of {role, content} messages")
    elif not isinstance(prompt, str):
        raise RowError(f"field 'prompt' must be a string or a list of messages, got {type(prompt).__name__}")
    elif not prompt.strip():
        raise RowError("field 'prompt' is empty")
    if not text.strip():
        raise RowError(f"field {name!r}: empty response")
    return prompt, text


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def prompt_ids(tokenizer, prompt: str | list[dict[str, str]]) -> list[int]:
    """Prompt tokens exactly as the engine layer's `score` builds them (chat template + generation prompt)."""
    from rayflow.llm import prompt_token_ids

    return prompt_token_ids(tokenizer, prompt)


def response_ids(tokenizer, text: str) -> list[int]:
    """Response tokens without special tokens, plus EOS."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def encode(row_id: str, prompt, chosen: str, rejected: str | None, tokenizer, cfg: DataConfig) -> Example:
    """Tokenise one parsed row; raises `RowError` when it does not fit the limits."""
    p_ids = prompt_ids(tokenizer, prompt)
    if len(p_ids) > cfg.max_prompt_length:
        raise RowError(f"prompt is {len(p_ids)} tokens, over max_prompt_length {cfg.max_prompt_length}")
    budget = cfg.max_length - len(p_ids)
    truncated = False
    answers = []
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if text is None:
            answers.append(None)
            continue
        ids = response_ids(tokenizer, text)
        if len(ids) > budget:
            if not cfg.truncate_responses:
                raise RowError(
                    f"prompt + {name} response is {len(p_ids) + len(ids)} tokens, over max_length "
                    f"{cfg.max_length} (set truncate_responses to cut instead)"
                )
            if budget < 1:
                raise RowError(
                    f"prompt leaves no room for the {name} response within max_length {cfg.max_length}"
                )
            ids, truncated = ids[:budget], True
        answers.append(ids)
    return Example(row_id, prompt, chosen, rejected, p_ids, answers[0], answers[1], truncated)


def load_examples(
    path: str | Path, kind: Kind, tokenizer, cfg: DataConfig
) -> tuple[list[Example], list[dict[str, Any]]]:
    """Every row of `path` as an `Example` or an error record `{source, row, reason}`, in file order."""
    examples: list[Example] = []
    errors: list[dict[str, Any]] = []
    for source, row, obj, error in read_rows(path):
        if error is None:
            try:
                prompt, chosen, rejected = parse_row(obj, kind)
                examples.append(encode(_row_id(obj), prompt, chosen, rejected, tokenizer, cfg))
                continue
            except RowError as err:
                error = str(err)
        errors.append({"source": source, "row": row, "reason": error})
    return examples, errors


def _row_id(obj: dict[str, Any]) -> str:
    if obj.get("id") is not None:
        return str(obj["id"])
    return hashlib.sha1(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def split_eval(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """Deterministic split by id hash: the same example lands on the same side in every run and sweep trial."""
    if fraction <= 0:
        return examples, []
    held = [e for e in examples if _bucket(e.id) < fraction]
    return [e for e in examples if _bucket(e.id) >= fraction], held


def _bucket(row_id: str) -> float:
    return int(hashlib.sha1(row_id.encode()).hexdigest()[:8], 16) / 16**8


def load_splits(
    cfg: DataConfig, kind: Kind, tokenizer
) -> tuple[list[Example], list[Example], list[dict], dict]:
    """(train, eval, error records, stats) for a job; stats counts rows read, kept, rejected and truncated."""
    train, errors = load_examples(cfg.train, kind, tokenizer, cfg)
    if cfg.eval is not None:
        held, eval_errors = load_examples(cfg.eval, kind, tokenizer, cfg)
        errors += eval_errors
    else:
        train, held = split_eval(train, cfg.eval_fraction)
    stats = {
        "rows_read": len(train) + len(held) + len(errors),
        "train_examples": len(train),
        "eval_examples": len(held),
        "errors": len(errors),
        "truncated_responses": sum(e.truncated for e in train + held),
    }
    if not train:
        raise ValueError(f"no usable training rows in {cfg.train!r} ({len(errors)} errors; see errors/)")
    return train, held, errors, stats


def write_errors(errors: list[dict[str, Any]], out_dir: str | Path) -> None:
    """Write error records to `out_dir/errors/errors.jsonl` (replacing an earlier run's)."""
    target = Path(out_dir) / "errors"
    target.mkdir(parents=True, exist_ok=True)
    with open(target / "errors.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in errors)
