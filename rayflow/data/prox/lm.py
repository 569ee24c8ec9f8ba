"""The `lm` program generator: ProX's refining models through rayflow's engine layer.

Production models are ProX's released 0.3B refiners, `gair-prox/web-doc-refining-lm` and
`gair-prox/web-chunk-refining-lm` (`gair-prox/math-doc-refining-lm` / `math-chunk-refining-lm` for math),
served by vLLM in the engine stage's actors (`stage.gpus_per_actor` on GPU clusters), by transformers, or by any
OpenAI-compatible endpoint. Offline and in tests, `tiny:tiny` takes their place: its programs are noise, the
path is real.

Prompts are passed to the engine as token ids, so truncation is exact: the doc prompt is cut at
`doc_max_prompt_tokens`. How prompts are rendered and what budgets programs get is a preset (`LMConfig.preset`):

* `rayflow`: the model's own chat template at both levels; a doc program gets 32 tokens (programs
  are ~5), and any prompt is cut to leave its program's budget free in the model's context;
* `prox`: as ProX runs its released refiners: the doc prompt in the Llama-2-chat template,
  the chunk prompt sent as text (see `prompts`), doc programs up to 2000 tokens, and prompts cut only at
  `doc_max_prompt_tokens` (or the context), the program then ending where the context does, as vLLM ends it.
  A program cut before its `drop_doc()` keeps the document, so the budget changes decisions.

The default, `auto`, picks `prox` when a level's model is one of ProX's released refiners (`gair-prox/...`) and
`rayflow` otherwise. Each setting a preset fixes may still be set on its own (null, the default, takes the
preset's); a setting given in the config wins over the preset's. Decoding is greedy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from rayflow.config import Config
from rayflow.data.engine_stage import generate_rows
from rayflow.data.prox.chunking import LongLinePolicy, chunk_document
from rayflow.data.prox.generator import Generated
from rayflow.data.prox.prompts import (
    CHUNK_MAX_PROGRAM_TOKENS,
    DOC_MAX_PROMPT_TOKENS,
    ChunkEncoding,
    DocTemplate,
    chunk_prompt_ids,
    doc_prompt_ids,
)
from rayflow.llm import Engine, EngineConfig, PromptRejected, SamplingParams, load_tokenizer

PromptPreset = Literal["auto", "rayflow", "prox"]
# ProX's released refiners (gair-prox/{web,math}-{doc,chunk}-refining-lm): `auto` runs them under the prox preset.
RELEASED_PREFIX = "gair-prox/"
# What each preset sets, unless the config sets it itself.
PRESETS: dict[str, dict[str, Any]] = {
    "rayflow": {
        "doc_template": "model",
        "chunk_encoding": "template_ids",
        "doc_max_tokens": 32,
        "reserve_program_room": True,
    },
    "prox": {
        "doc_template": "llama2_chat",
        "chunk_encoding": "template_text",
        "doc_max_tokens": 2000,
        "reserve_program_room": False,
    },
}


class LMConfig(Config):
    """The refining models and ProX's prompt settings."""

    doc_engine: EngineConfig = EngineConfig(backend="vllm", model="gair-prox/web-doc-refining-lm")
    chunk_engine: EngineConfig = EngineConfig(backend="vllm", model="gair-prox/web-chunk-refining-lm")
    preset: PromptPreset = Field(
        "auto",
        description="prompt rendering and budgets: rayflow (model's template, 32-token doc programs), prox (as "
        "ProX runs its released refiners: Llama-2-chat doc prompt, text chunk prompt, 2000-token doc programs), "
        "or auto (prox for gair-prox/ models, else rayflow)",
    )
    doc_template: DocTemplate | None = Field(
        None,
        description="doc prompt chat template: model (its own) or llama2_chat (ProX's); null: the preset's",
    )
    chunk_encoding: ChunkEncoding | None = Field(
        None,
        description="chunk prompt: template_ids (template tokenised at once) or template_text (ProX: rendered "
        "text encoded with special tokens, as vLLM encodes text); null: the preset's",
    )
    reserve_program_room: bool | None = Field(
        None,
        description="cut prompts to leave the program's budget free in the context (rayflow), or only at the "
        "prompt cut and the context, the program ending at the context (ProX); null: the preset's",
    )
    doc_max_prompt_tokens: int = Field(
        DOC_MAX_PROMPT_TOKENS, ge=16, description="doc prompt cut (ProX: 2000)"
    )
    doc_max_tokens: int | None = Field(
        None, ge=1, description="doc program tokens (preset rayflow: 32, prox: 2000); null: the preset's"
    )
    chunk_tokens: int = Field(1500, ge=16, description="max refiner tokens of numbered lines per chunk")
    chunk_max_tokens: int = Field(
        CHUNK_MAX_PROGRAM_TOKENS, ge=1, description="chunk program tokens (ProX: 256)"
    )
    long_line: LongLinePolicy = Field(
        "own_chunk", description="a line longer than a chunk: own_chunk|truncate|skip"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the settings the config leaves out (or sets to null) from its preset's: after validation every
        one of them holds a value."""
        if not isinstance(data, dict):
            return data
        preset = PRESETS.get(
            _resolve(data.get("preset", "auto"), data.get("doc_engine"), data.get("chunk_engine"))
        )
        if preset is None:
            return data  # field validation names the bad preset
        return {**data, **{k: v for k, v in preset.items() if data.get(k) is None}}

    @property
    def resolved_preset(self) -> str:
        """`preset`, with `auto` resolved: prox when a level's model is one of ProX's released refiners."""
        return _resolve(self.preset, self.doc_engine, self.chunk_engine)

    @model_serializer(mode="wrap")
    def _dump_preset_values_as_null(self, handler) -> dict[str, Any]:
        """A setting equal to its preset's is dumped as null, so a dumped config (the defaults `load_config`
        starts from, `_prox_job.json`) still follows a `preset` set after it: `lm.preset=prox` on the command
        line gets all of ProX's settings except those the file sets otherwise."""
        data = handler(self)
        for key, value in PRESETS[self.resolved_preset].items():
            if data.get(key) == value:
                data[key] = None
        return data


def _resolve(preset: str, *engines: Any) -> str:
    """`auto` -> prox when any engine (an `EngineConfig`, its data, or None for the default) names a released
    ProX refiner, else rayflow; other presets as they are."""
    if preset != "auto":
        return preset
    default = LMConfig.model_fields["doc_engine"].default.model
    names = [
        default if e is None else e.get("model", "") if isinstance(e, dict) else getattr(e, "model", "")
        for e in engines
    ]
    return "prox" if any(str(name).startswith(RELEASED_PREFIX) for name in names) else "rayflow"


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

    def max_tokens(self, level: Literal["doc", "chunk"], context: int | None) -> int:
        """The program budget sent to an engine with a `context`-token window (None: unknown): the level's
        `*_max_tokens`, capped at the context (an engine refuses a budget over it; the program of a prompt
        that fills the context ends at the context, as vLLM ends it)."""
        budget = self.config.doc_max_tokens if level == "doc" else self.config.chunk_max_tokens
        return min(budget, context) if context else budget

    def _prompt_limit(self, level: Literal["doc", "chunk"], context: int | None) -> int | None:
        """The most prompt tokens sent: the room the budget leaves, or (ProX) the context less one token."""
        if not context:
            return None
        if self.config.reserve_program_room:
            return context - self.max_tokens(level, context)
        return context - 1

    def doc_prompts(self, texts: list[str], tokenizer, context: int | None) -> list[list[int]]:
        """The token ids of each text's doc-level prompt, exactly as sent to an engine with a `context`-token
        window (None: unknown): rendered as the preset says, cut at `doc_max_prompt_tokens` and to fit the
        context (`_prompt_limit`). Refiner training (`rayflow.data.prox.annotate`) builds its prompts here, so a
        trained refiner plugs in unchanged."""
        c = self.config
        limit = c.doc_max_prompt_tokens
        room = self._prompt_limit("doc", context)
        if room is not None:
            limit = min(limit, room)
        return [doc_prompt_ids(tokenizer, text, limit, c.doc_template) for text in texts]

    def chunk_prompts(self, texts: list[str], tokenizer, context: int | None) -> list[list[list[int]]]:
        """Per text, the token ids of each chunk's prompt (chunks in order), exactly as sent to an engine with a
        `context`-token window; a prompt is cut only to fit the context (`_prompt_limit`)."""
        room = self._prompt_limit("chunk", context)
        c = self.config
        return [
            [
                chunk_prompt_ids(tokenizer, chunk, room, c.chunk_encoding)
                for chunk in chunk_document(t, tokenizer, c.chunk_tokens, c.long_line)
            ]
            for t in texts
        ]

    def doc_programs(self, texts: list[str], engine: Engine) -> list[Generated]:
        context = self.context_of(engine)
        prompts = [[p] for p in self.doc_prompts(texts, self._tokenizer_of(engine), context)]
        params = SamplingParams(temperature=0.0, max_tokens=self.max_tokens("doc", context))
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
        context = self.context_of(engine)
        prompts = self.chunk_prompts(texts, self._tokenizer_of(engine), context)
        params = SamplingParams(temperature=0.0, max_tokens=self.max_tokens("chunk", context))
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
