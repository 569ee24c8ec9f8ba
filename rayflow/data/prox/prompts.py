"""The prompts ProX's refining models were trained on, rendered and encoded as a preset says.

Both levels use the system prompt `SYSTEM_PROMPT` and a chat template with a generation prompt. The doc level
reads the raw text, no line numbers; the chunk level reads one chunk of numbered lines (see `chunking`) wrapped
in `[doc]`/`[/doc]`. Decoding is greedy. Two renderings (`LMConfig.preset`):

* `rayflow`: both levels through the model's own chat template, tokenised in one step (`tokenize=True`: the
  template writes any BOS, none is added);
* `prox`: as GAIR-NLP/ProX runs its released refiners (`data_gen/tasks/apply_doc_refining.py` and
  `apply_chunk_refining.py`). Doc level: the Llama-2-chat template (`LLAMA2_CHAT_TEMPLATE`, ProX's
  `--token_template meta-llama/Llama-2-7b-chat-hf`) with the model's BOS/EOS, encoded without added special
  tokens and cut at 2000 tokens (`truncation=True, max_length=2000`), so a long document loses its end and the
  closing `[/INST]`. Chunk level: the model's chat template rendered to text (`tokenize=False`) and sent to vLLM
  as text, which vLLM encodes with the tokenizer's special tokens: a template that writes BOS gets a second one.
"""

from __future__ import annotations

from typing import Literal

from rayflow.llm import Message, prompt_token_ids

SYSTEM_PROMPT = "You are a helpful, respectful and honest assistant."
DOC_MAX_PROMPT_TOKENS = 2000
CHUNK_MAX_PROGRAM_TOKENS = 256

DocTemplate = Literal["model", "llama2_chat"]
ChunkEncoding = Literal["template_ids", "template_text"]

# The chat template of meta-llama/Llama-2-7b-chat-hf (its tokenizer_config.json, `chat_template`), which ProX
# renders its doc-level prompt with (`--token_template`, default meta-llama/Llama-2-7b-chat-hf). A released
# model's prompt format is an interface, so it is carried here verbatim: the tokenizer is gated on the Hub.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def messages(user: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def chunk_user_message(chunk: str) -> str:
    return f"[doc]\n{chunk}\n[/doc]"


def doc_prompt_text(tokenizer, text: str, template: DocTemplate = "model") -> str:
    """The doc-level prompt for `text` as text: the model's chat template, or Llama-2-chat's (ProX's)."""
    chat_template = LLAMA2_CHAT_TEMPLATE if template == "llama2_chat" else None
    return tokenizer.apply_chat_template(
        messages(text), chat_template=chat_template, add_generation_prompt=True, tokenize=False
    )


def doc_prompt_ids(
    tokenizer, text: str, max_prompt_tokens: int = DOC_MAX_PROMPT_TOKENS, template: DocTemplate = "model"
) -> list[int]:
    """Token ids of the doc-level prompt for `text`, templated, then cut to `max_prompt_tokens`.

    `template="model"`: the model's chat template, tokenised with it; `"llama2_chat"`: ProX's rendering, the
    Llama-2-chat template with the tokenizer's BOS/EOS, encoded without added special tokens.
    """
    if template == "llama2_chat":
        rendered = doc_prompt_text(tokenizer, text, template)
        return tokenizer(rendered, add_special_tokens=False)["input_ids"][:max_prompt_tokens]
    return prompt_token_ids(tokenizer, messages(text))[:max_prompt_tokens]


def chunk_prompt_text(tokenizer, chunk: str) -> str:
    """The chunk-level prompt as text: `[doc]`-wrapped chunk, the model's chat template (ProX's `tokenize=False`).

    A Llama tokenizer without a chat template gets Llama-2-chat's: the transformers ProX pins (4.39.1) falls back
    to `LlamaTokenizer.default_chat_template`, which renders a system + user turn exactly as it does.
    """
    fallback = tokenizer.chat_template is None and "llama" in type(tokenizer).__name__.lower()
    return tokenizer.apply_chat_template(
        messages(chunk_user_message(chunk)),
        chat_template=LLAMA2_CHAT_TEMPLATE if fallback else None,
        add_generation_prompt=True,
        tokenize=False,
    )


def chunk_prompt_ids(
    tokenizer, chunk: str, max_prompt_tokens: int | None = None, encoding: ChunkEncoding = "template_ids"
) -> list[int]:
    """Token ids of the chunk-level prompt; cut only when over `max_prompt_tokens` (the context's room).

    `encoding="template_ids"`: the chat template tokenised in one step; `"template_text"`: ProX's, the rendered
    text encoded as vLLM encodes a text prompt, special tokens added (a template that writes BOS gets two).
    """
    if encoding == "template_text":
        ids = tokenizer(chunk_prompt_text(tokenizer, chunk))["input_ids"]
    else:
        ids = prompt_token_ids(tokenizer, messages(chunk_user_message(chunk)))
    return ids[:max_prompt_tokens] if max_prompt_tokens else ids
