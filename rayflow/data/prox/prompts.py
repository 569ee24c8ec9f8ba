"""The prompts ProX's refining models were trained on, rendered with the model's own chat template.

Both levels use the system prompt `SYSTEM_PROMPT` and the model's chat template with a generation prompt
(ProX's released refiners use Llama-2-chat's). The doc level reads the raw text, no line numbers; the templated
prompt is cut at `max_prompt_tokens` (2000 in ProX) tokens, so a long document loses its end and the closing
template tokens, as in ProX. The chunk level reads one chunk of numbered lines (see `chunking`) wrapped in
`[doc]`/`[/doc]`. Decoding is greedy.
"""

from __future__ import annotations

from rayflow.llm import Message, prompt_token_ids

SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."
DOC_MAX_PROMPT_TOKENS = 2000
CHUNK_MAX_PROGRAM_TOKENS = 256


def messages(user: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def chunk_user_message(chunk: str) -> str:
    return f"[doc]\n{chunk}\n[/doc]"


def doc_prompt_ids(tokenizer, text: str, max_prompt_tokens: int = DOC_MAX_PROMPT_TOKENS) -> list[int]:
    """Token ids of the doc-level prompt for `text`, templated, then cut to `max_prompt_tokens`."""
    return prompt_token_ids(tokenizer, messages(text))[:max_prompt_tokens]


def chunk_prompt_ids(tokenizer, chunk: str, max_prompt_tokens: int | None = None) -> list[int]:
    """Token ids of the chunk-level prompt; cut only when over `max_prompt_tokens` (the context's room)."""
    ids = prompt_token_ids(tokenizer, messages(chunk_user_message(chunk)))
    return ids[:max_prompt_tokens] if max_prompt_tokens else ids
