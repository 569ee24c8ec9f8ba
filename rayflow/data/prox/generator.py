"""Program generators: what writes a ProX program for each document. The refine stage cannot tell them apart.

* `lm` (`rayflow.data.prox.lm.LMGenerator`): the refining model through the engine layer (vLLM, transformers
  or an OpenAI-compatible server), with ProX's prompts and chunking; the engine stage builds its engine;
* `rules` (`rayflow.data.prox.rules.RulesGenerator`): an expert that writes programs from classic heuristics,
  the offline default and the rule-based baseline; it needs no engine.

Both answer `doc_programs(texts, engine)` and `chunk_programs(texts, engine)` with one `Generated` per text, in
order; a chunk program is the programs of all of a document's chunks joined by newlines. This module holds only
the shared types, so the generators import it and not each other; the pipeline picks the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from rayflow.llm import Engine

GeneratorName = Literal["rules", "lm"]


@dataclass(frozen=True)
class Generated:
    program: str = ""
    n_prompts: int = 1  # model calls for this document (chunks at chunk level)
    prompt_tokens: int = 0
    program_tokens: int = 0
    truncated: bool = False  # some call stopped at its token limit: the program may be cut mid-line
    error: str | None = None  # the document could not be given a program (it becomes an error record)


class ProgramGenerator(Protocol):
    def doc_programs(self, texts: list[str], engine: Engine | None) -> list[Generated]: ...

    def chunk_programs(self, texts: list[str], engine: Engine | None) -> list[Generated]: ...

    def count_tokens(self, texts: list[str], engine: Engine | None) -> list[int] | None:
        """Tokens of each text for retention statistics; None when the generator has no tokenizer."""
