"""Prompts as tokens, the same on every backend, and the one rule for which prompts an engine serves.

Every backend renders prompts with `prompt_token_ids` and the model's own tokenizer (`load_tokenizer`), so a
prompt means the same tokens everywhere. Before a batch reaches the model, each backend checks every prompt
with `generation_refusal` / `scoring_refusal` and answers the ones that fail with a `PromptRejected`:

* text that is not valid Unicode (a lone surrogate: tokenizers cannot encode it);
* an empty prompt (no token to condition on);
* a token id below 0 or at/above the model's vocabulary size;
* a prompt that does not fit the context length (`EngineConfig.max_model_len`, else the model's):
  generation needs the prompt to leave room for at least one new token; scoring needs
  prompt + completion to leave one position free (vLLM scores with a one-token generation pass, and the
  other backends keep the same limit so a pair is accepted or refused alike everywhere);
* a generation whose `max_tokens` exceeds the context length (no prompt could leave that room), refused
  with `field="max_tokens"`.

`generation_inputs` and `scoring_inputs` apply the whole rule to a batch. Sampling fields with fixed bounds
(seed range, non-empty stop strings) are checked by `SamplingParams` itself.

A prompt that fits but leaves fewer than `max_tokens` positions is served, and generation stops at the
context with `finish_reason="length"` (`new_token_budget`): vLLM, offline and as an OpenAI server, caps
max_tokens this way, and the hf backend does the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from rayflow.config import cache_root
from rayflow.llm.models import resolve_model_path
from rayflow.llm.types import (
    Completion,
    EngineConfig,
    EngineError,
    Prompt,
    PromptRejected,
    SamplingParams,
    unicode_problem,
)


def load_tokenizer(config: EngineConfig):
    """The tokenizer every backend uses to render chat prompts, so prompts mean the same tokens everywhere.

    The class is the one `AutoTokenizer` picks. For a local directory that choice is remembered (see
    `_tokenizer_class_memo`), and later loads call that class directly: `AutoTokenizer` imports transformers'
    model and generation machinery (torch, sklearn, scipy), ~3 CPU-s in every job driver that only tokenizes.
    """
    source = resolve_model_path(config.tokenizer or config.model)
    memo = _tokenizer_class_memo(source)
    known = _remembered_tokenizer_class(memo) if memo is not None else None
    try:
        if known is not None:
            return known.from_pretrained(source)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise EngineError(f"cannot load tokenizer {source!r}: {err}") from err
    if memo is not None:
        _remember_tokenizer_class(memo, type(tokenizer))
    return tokenizer


def _tokenizer_class_memo(source: str) -> Path | None:
    """Where the class `AutoTokenizer` picked for the local directory `source` is kept, or None for a hub id.

    `$RAYFLOW_CACHE/tokenizer-classes/<key>`; the key hashes the directory's path, its tokenizer_config.json and
    config.json (what the choice depends on) and transformers' version (whose rules make it)."""
    directory = Path(source)
    if not directory.is_dir():
        return None
    from importlib.metadata import version

    key = hashlib.sha256(f"{directory.resolve()}\0{version('transformers')}".encode())
    for name in ("tokenizer_config.json", "config.json"):
        with contextlib.suppress(OSError):
            key.update(b"\0" + (directory / name).read_bytes())
    return cache_root() / "tokenizer-classes" / key.hexdigest()


def _remembered_tokenizer_class(memo: Path) -> type | None:
    """The class a memo names, or None when there is none (or it names nothing transformers exports)."""
    try:
        name = memo.read_text().strip()
    except OSError:
        return None
    import transformers

    known = getattr(transformers, name, None)
    return known if isinstance(known, type) else None


def _remember_tokenizer_class(memo: Path, cls: type) -> None:
    # Only classes transformers exports by name (not remote code, which AutoTokenizer loads dynamically). A cache
    # that cannot be written costs the next load time, nothing else.
    import transformers

    if getattr(transformers, cls.__name__, None) is not cls:
        return
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(cls.__name__)
        os.replace(tmp, memo)


def prompt_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of one prompt: chat messages get the chat template and a generation prompt.

    An empty string or list gives `[]` (an engine rejects it); a value of another type raises `TypeError`.
    """
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if not isinstance(prompt, list):
        raise TypeError(f"a prompt is a str, a list of messages or a list of token ids, not {type(prompt).__name__}")
    if all(isinstance(t, int) for t in prompt):
        return list(prompt)
    if not all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        raise TypeError("chat prompts are lists of {'role': ..., 'content': ...} messages")
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding for tokenize=True; older versions a plain list.
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def completion_token_ids(tokenizer, completion: Completion) -> list[int]:
    """Token ids of one completion: strings are tokenised without special tokens, id lists pass through."""
    if isinstance(completion, str):
        return tokenizer(completion, add_special_tokens=False)["input_ids"]
    return list(completion)


def text_refusal(prompt: Prompt | Completion, what: str = "prompt") -> str | None:
    """Why this prompt's text cannot be tokenised (invalid Unicode in a string or a message), or None."""
    if isinstance(prompt, str):
        texts = [prompt]
    elif isinstance(prompt, list):
        texts = [v for m in prompt if isinstance(m, dict) for v in m.values() if isinstance(v, str)]
    else:
        return None  # a wrong type is the caller's mistake: prompt_token_ids raises TypeError for it
    problem = next((p for p in map(unicode_problem, texts) if p), None)
    return f"the {what} is {problem}" if problem else None


def generation_inputs(
    tokenizer, prompts: Sequence[Prompt], params: SamplingParams, context: int | None, vocab_size: int | None
) -> list[list[int] | PromptRejected]:
    """Per prompt, its token ids, or a `PromptRejected` when the engine refuses it (the rule above).

    `context` and `vocab_size` are in tokens; None skips that check.
    """
    out: list[list[int] | PromptRejected] = []
    for prompt in prompts:
        reason = text_refusal(prompt)
        ids = [] if reason else prompt_token_ids(tokenizer, prompt)
        reason = reason or generation_refusal(ids, context, vocab_size)
        if reason:
            out.append(PromptRejected(reason))
        elif context is not None and params.max_tokens > context:
            out.append(PromptRejected(
                f"max_tokens is {params.max_tokens}, more than the context length {context}", "max_tokens"
            ))  # fmt: skip
        else:
            out.append(ids)
    return out


def scoring_inputs(
    tokenizer,
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    context: int | None,
    vocab_size: int | None,
) -> list[tuple[list[int], list[int]] | PromptRejected]:
    """Per pair, (prompt ids, completion ids), or a `PromptRejected` when the engine refuses it."""
    check_pairs(prompts, completions)
    out: list[tuple[list[int], list[int]] | PromptRejected] = []
    for prompt, completion in zip(prompts, completions):
        reason = text_refusal(prompt) or text_refusal(completion, "completion")
        if reason:
            out.append(PromptRejected(reason))
            continue
        p, c = prompt_token_ids(tokenizer, prompt), completion_token_ids(tokenizer, completion)
        reason = scoring_refusal(p, c, context, vocab_size)
        out.append(PromptRejected(reason) if reason else (p, c))
    return out


def check_pairs(prompts: Sequence[Prompt], completions: Sequence[Completion]) -> None:
    """`score` needs one completion per prompt; a mismatch is the caller's mistake and raises `ValueError`."""
    if len(prompts) != len(completions):
        raise ValueError(f"score() got {len(prompts)} prompts but {len(completions)} completions")


def generation_refusal(prompt_ids: Sequence[int], context: int | None, vocab_size: int | None) -> str | None:
    """Why an engine refuses to continue this prompt, or None when it serves it (see the module docstring).

    `context` and `vocab_size` are in tokens; None skips that check (the backend does not know it).
    """
    if not prompt_ids:
        return "the prompt is empty"
    bad = _bad_token_id(prompt_ids, vocab_size)
    if bad is not None:
        return bad
    if context is not None and len(prompt_ids) >= context:
        return (
            f"the prompt has {len(prompt_ids)} tokens: it leaves no room for a new token in the context "
            f"length {context}"
        )
    return None


def scoring_refusal(
    prompt_ids: Sequence[int], completion_ids: Sequence[int], context: int | None, vocab_size: int | None
) -> str | None:
    """Why an engine refuses to score this pair, or None when it scores it (see the module docstring)."""
    if not prompt_ids:
        return "the prompt is empty: the first completion token would have no context"
    bad = _bad_token_id(prompt_ids, vocab_size) or _bad_token_id(completion_ids, vocab_size)
    if bad is not None:
        return bad
    total = len(prompt_ids) + len(completion_ids)
    if context is not None and total >= context:
        return f"prompt + completion is {total} tokens; scoring needs fewer than the context length {context}"
    return None


def new_token_budget(prompt_len: int, max_tokens: int, context: int | None) -> int:
    """New tokens a prompt of `prompt_len` tokens may get: `max_tokens`, capped at what the context leaves."""
    return max_tokens if context is None else min(max_tokens, context - prompt_len)


def _bad_token_id(ids: Sequence[int], vocab_size: int | None) -> str | None:
    low, high = min(ids, default=0), max(ids, default=0)
    if low < 0:
        return f"token id {low} is negative"
    if vocab_size is not None and high >= vocab_size:
        return f"token id {high} is outside the vocabulary (size {vocab_size})"
    return None


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
