"""The `lm` program generator: ProX's refining models through rayflow's engine layer.

Production models are ProX's released 0.3B refiners, `gair-prox/web-doc-refining-lm` and
`gair-prox/web-chunk-refining-lm` (`gair-prox/math-doc-refining-lm` / `math-chunk-refining-lm` for math),
served by vLLM inside Ray Data actors (`gpus_per_actor` on GPU clusters), by transformers, or by any
OpenAI-compatible endpoint. Offline and in tests, `tiny:tiny` takes their place: its programs are noise, the
path is real.

Prompts are passed to the engine as token ids, so truncation is exact: the doc prompt is cut at
`doc_max_prompt_tokens`, and any prompt is cut to leave `max_tokens` of room in the model's context.
Decoding is greedy.
"""

from __future__ import annotations

from pydantic import Field

from rayflow.config import Config
from rayflow.data.prox.chunking import LongLinePolicy, chunk_document
from rayflow.data.prox.generator import Generated
from rayflow.data.prox.prompts import (
    CHUNK_MAX_PROGRAM_TOKENS,
    DOC_MAX_PROMPT_TOKENS,
    chunk_prompt_ids,
    doc_prompt_ids,
)
from rayflow.llm import EngineConfig, SamplingParams, build_engine
from rayflow.llm import load_tokenizer


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
    """Writes programs with the refining models; each engine is built on first use (one per stage actor).

    When both levels name the same engine config (one model for both, as offline), they share one engine: a
    fused stage then holds one vLLM engine, not two.
    """

    def __init__(self, config: LMConfig):
        self.config = config
        self._engines: dict[str, object] = {}
        self._tokenizer = None

    def _engine(self, level: str):
        if level not in self._engines:
            other = "chunk" if level == "doc" else "doc"
            if other in self._engines and self.config.doc_engine == self.config.chunk_engine:
                self._engines[level] = self._engines[other]
            else:
                self._engines[level] = build_engine(
                    self.config.doc_engine if level == "doc" else self.config.chunk_engine
                )
        return self._engines[level]

    def close(self) -> None:
        """Close every engine this generator built (each once)."""
        for engine in {id(e): e for e in self._engines.values()}.values():
            engine.close()
        self._engines.clear()

    def _tokenizer_of(self, engine):
        return getattr(engine, "tokenizer", None) or load_tokenizer(engine.config)

    def _room(self, engine, max_tokens: int) -> int | None:
        """Prompt tokens that fit in the context with `max_tokens` generated; None when the context is unknown."""
        context = engine.config.max_model_len or getattr(engine, "max_len", None)
        return context - max_tokens if context else None

    def doc_programs(self, texts: list[str]) -> list[Generated]:
        engine = self._engine("doc")
        tokenizer = self._tokenizer_of(engine)
        limit = self.config.doc_max_prompt_tokens
        room = self._room(engine, self.config.doc_max_tokens)
        if room is not None:
            limit = min(limit, room)
        prompts = [doc_prompt_ids(tokenizer, text, limit) for text in texts]
        params = SamplingParams(temperature=0.0, max_tokens=self.config.doc_max_tokens)
        outputs = self._generate(engine, prompts, params)
        return [
            Generated(error=out)
            if isinstance(out, str)
            else Generated(
                out.text.strip(" "),
                prompt_tokens=len(prompt),
                program_tokens=len(out.token_ids),
                truncated=out.finish_reason == "length",
            )
            for prompt, out in zip(prompts, outputs)
        ]

    def chunk_programs(self, texts: list[str]) -> list[Generated]:
        engine = self._engine("chunk")
        tokenizer = self._tokenizer_of(engine)
        room = self._room(engine, self.config.chunk_max_tokens)
        per_doc = [
            chunk_document(t, tokenizer, self.config.chunk_tokens, self.config.long_line) for t in texts
        ]
        prompts = [chunk_prompt_ids(tokenizer, chunk, room) for chunks in per_doc for chunk in chunks]
        params = SamplingParams(temperature=0.0, max_tokens=self.config.chunk_max_tokens)
        outputs = self._generate(engine, prompts, params)
        results, at = [], 0
        for chunks in per_doc:
            doc_out, doc_prompts = outputs[at : at + len(chunks)], prompts[at : at + len(chunks)]
            at += len(chunks)
            failed = next((o for o in doc_out if isinstance(o, str)), None)
            if failed is not None:
                results.append(Generated(error=failed))
                continue
            results.append(
                Generated(
                    "\n".join(o.text.strip(" ") for o in doc_out),
                    n_prompts=len(chunks),
                    prompt_tokens=sum(len(p) for p in doc_prompts),
                    program_tokens=sum(len(o.token_ids) for o in doc_out),
                    truncated=any(o.finish_reason == "length" for o in doc_out),
                )
            )
        return results

    def _generate(self, engine, prompts: list[list[int]], params: SamplingParams) -> list:
        """Generations in order; a prompt the engine rejects becomes its error message instead of failing all."""
        if not prompts:
            return []
        try:
            return engine.generate(prompts, params)
        except ValueError:
            outputs = []
            for prompt in prompts:
                try:
                    outputs.append(engine.generate([prompt], params)[0])
                except ValueError as err:
                    outputs.append(f"the engine rejected the prompt: {err}")
            return outputs

    def count_tokens(self, texts: list[str]) -> list[int]:
        if self._tokenizer is None:
            engine_cfg = self.config.chunk_engine
            engine = self._engines.get("chunk") or self._engines.get("doc")
            self._tokenizer = self._tokenizer_of(engine) if engine else load_tokenizer(engine_cfg)
        return [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]
