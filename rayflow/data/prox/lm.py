"""The `lm` program generator: ProX's refining models through rayflow's engine layer.

Production models are ProX's released 0.3B refiners, `gair-prox/web-doc-refining-lm` and
`gair-prox/web-chunk-refining-lm` (`gair-prox/math-doc-refining-lm` / `math-chunk-refining-lm` for math),
served by vLLM in the engine stage's actors (`stage.gpus_per_actor` on GPU clusters), by transformers, or by any
OpenAI-compatible endpoint. Offline and in tests, `tiny:tiny` takes their place: its programs are noise, the
path is real.

Prompts are passed to the engine as token ids, so truncation is exact: the doc prompt is cut at
`doc_max_prompt_tokens`, and any prompt is cut to leave `max_tokens` of room in the model's context.
Decoding is greedy.
"""

from __future__ import annotations

from pydantic import Field

from rayflow.config import Config
from rayflow.data.engine_stage import generate_rows
from rayflow.data.prox.chunking import LongLinePolicy, chunk_document
from rayflow.data.prox.generator import Generated
from rayflow.data.prox.prompts import (
    CHUNK_MAX_PROGRAM_TOKENS,
    DOC_MAX_PROMPT_TOKENS,
    chunk_prompt_ids,
    doc_prompt_ids,
)
from rayflow.llm import Engine, EngineConfig, PromptRejected, SamplingParams, load_tokenizer


class LMConfig(Config):
    """The refining models and ProX's prompt settings."""

    doc_engine: EngineConfig = EngineConfig(backend="vllm", model="gair-prox/web-doc-refining-lm")
    chunk_engine: EngineConfig = EngineConfig(backend="vllm", model="gair-prox/web-chunk-refining-lm")
    doc_max_prompt_tokens: int = Field(
        DOC_MAX_PROMPT_TOKENS, ge=16, description="doc prompt cut (ProX: 2000)"
    )
    doc_max_tokens: int = Field(32, ge=1, description="doc program tokens (ProX: 2000; programs are ~5)")
    chunk_tokens: int = Field(1500, ge=16, description="max refiner tokens of numbered lines per chunk")
    chunk_max_tokens: int = Field(
        CHUNK_MAX_PROGRAM_TOKENS, ge=1, description="chunk program tokens (ProX: 256)"
    )
    long_line: LongLinePolicy = Field(
        "own_chunk", description="a line longer than a chunk: own_chunk|truncate|skip"
    )


class LMGenerator:
    """Writes programs with the refining models. It holds no engine: the engine stage builds one per actor (one
    for both levels when `doc_engine` and `chunk_engine` are equal) and passes it in. A document whose prompt
    the engine refuses gets `Generated.error`, and the other documents of the batch are unaffected."""

    def __init__(self, config: LMConfig):
        self.config = config
        self._tokenizers: dict[int, object] = {}

    def _tokenizer_of(self, engine: Engine):
        """The engine's own tokenizer (local backends hold one), else the one its config names, loaded once."""
        if id(engine) not in self._tokenizers:
            self._tokenizers[id(engine)] = getattr(engine, "tokenizer", None) or load_tokenizer(engine.config)
        return self._tokenizers[id(engine)]

    @staticmethod
    def context_of(engine: Engine) -> int | None:
        """The engine's context in tokens; None when unknown."""
        return engine.config.max_model_len or getattr(engine, "max_len", None)

    def doc_prompts(self, texts: list[str], tokenizer, context: int | None) -> list[list[int]]:
        """The token ids of each text's doc-level prompt, exactly as sent to an engine with a `context`-token
        window (None: unknown): cut at `doc_max_prompt_tokens`, and to leave `doc_max_tokens` of room. Refiner
        training (`rayflow.data.prox.annotate`) builds its prompts here, so a trained refiner plugs in unchanged."""
        limit = self.config.doc_max_prompt_tokens
        if context:
            limit = min(limit, context - self.config.doc_max_tokens)
        return [doc_prompt_ids(tokenizer, text, limit) for text in texts]

    def chunk_prompts(self, texts: list[str], tokenizer, context: int | None) -> list[list[list[int]]]:
        """Per text, the token ids of each chunk's prompt (chunks in order), exactly as sent to an engine with a
        `context`-token window; a prompt is cut only to leave `chunk_max_tokens` of room."""
        room = context - self.config.chunk_max_tokens if context else None
        c = self.config
        return [
            [
                chunk_prompt_ids(tokenizer, chunk, room)
                for chunk in chunk_document(t, tokenizer, c.chunk_tokens, c.long_line)
            ]
            for t in texts
        ]

    def doc_programs(self, texts: list[str], engine: Engine) -> list[Generated]:
        prompts = [[p] for p in self.doc_prompts(texts, self._tokenizer_of(engine), self.context_of(engine))]
        params = SamplingParams(temperature=0.0, max_tokens=self.config.doc_max_tokens)
        return [
            Generated(error=f"the engine rejected the prompt: {out.reason}")
            if isinstance(out, PromptRejected)
            else Generated(
                out[0].text.strip(" "),
                prompt_tokens=len(prompt[0]),
                program_tokens=len(out[0].token_ids),
                truncated=out[0].finish_reason == "length",
            )
            for prompt, out in zip(prompts, generate_rows(engine, prompts, params))
        ]

    def chunk_programs(self, texts: list[str], engine: Engine) -> list[Generated]:
        prompts = self.chunk_prompts(texts, self._tokenizer_of(engine), self.context_of(engine))
        params = SamplingParams(temperature=0.0, max_tokens=self.config.chunk_max_tokens)
        return [
            Generated(error=f"the engine rejected a chunk prompt: {out.reason}")
            if isinstance(out, PromptRejected)
            else Generated(
                "\n".join(o.text.strip(" ") for o in out),
                n_prompts=len(doc_prompts),
                prompt_tokens=sum(len(p) for p in doc_prompts),
                program_tokens=sum(len(o.token_ids) for o in out),
                truncated=any(o.finish_reason == "length" for o in out),
            )
            for doc_prompts, out in zip(prompts, generate_rows(engine, prompts, params))
        ]

    def count_tokens(self, texts: list[str], engine: Engine) -> list[int]:
        return [len(ids) for ids in self._tokenizer_of(engine)(texts, add_special_tokens=False)["input_ids"]]
