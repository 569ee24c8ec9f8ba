"""Prompts as tokens, the same on every backend, and the one rule for which prompts an engine serves.

Every backend renders prompts with `prompt_token_ids` and the model's own tokenizer (`load_tokenizer`), so a
prompt means the same tokens everywhere. Before a batch reaches the model, each backend checks every prompt
with `generation_refusal` / `scoring_refusal` and answers the ones that fail with a `PromptRejected`:

* an empty prompt (no token to condition on);
* a token id below 0 or at/above the model's vocabulary size;
* a prompt that does not fit the context length (`EngineConfig.max_model_len`, else the model's):
  generation needs the prompt to leave room for at least one new token; scoring needs
  prompt + completion to leave one position free (vLLM scores with a one-token generation pass, and the
  other backends keep the same limit so a pair is accepted or refused alike everywhere).

A prompt that fits but leaves fewer than `max_tokens` positions is served, and generation stops at the
context with `finish_reason="length"` (`new_token_budget`): vLLM, offline and as an OpenAI server, caps
max_tokens this way, and the hf backend does the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from rayflow.llm.models import resolve_model_path
from rayflow.llm.types import Completion, EngineConfig, EngineError, Prompt


def load_tokenizer(config: EngineConfig):
    """The tokenizer every backend uses to render chat prompts, so prompts mean the same tokens everywhere."""
    from transformers import AutoTokenizer

    source = resolve_model_path(config.tokenizer or config.model)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise EngineError(f"cannot load tokenizer {source!r}: {err}") from err


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
