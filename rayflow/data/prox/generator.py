"""Program generators: what writes a ProX program for each document. The pipeline cannot tell them apart.

* `lm` (`rayflow.data.prox.lm`): the refining model through the engine layer (vLLM, transformers or an
  OpenAI-compatible server), with ProX's prompts and chunking;
* `rules` (`rayflow.data.prox.rules`): an expert that writes programs from classic heuristics, the offline
  default and the rule-based baseline.

Both answer `doc_programs(texts)` and `chunk_programs(texts)` with one `Generated` per text, in order; a chunk
program is the programs of all of a document's chunks joined by newlines. Both are built inside Ray actors,
once per actor, by `build_generator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

GeneratorName = Literal["rules", "lm"]


@dataclass(frozen=True)
class Generated:
    program: str
    n_prompts: int = 1  # model calls for this document (chunks at chunk level)
    prompt_tokens: int = 0
    program_tokens: int = 0
    truncated: bool = False  # some call stopped at its token limit: the program may be cut mid-line
    error: str | None = None  # the document could not be given a program (it becomes an error record)


class ProgramGenerator(Protocol):
    def doc_programs(self, texts: list[str]) -> list[Generated]: ...

    def chunk_programs(self, texts: list[str]) -> list[Generated]: ...

    def count_tokens(self, texts: list[str]) -> list[int] | None:
        """Tokens of each text for retention statistics; None when the generator has no tokenizer."""


def build_generator(name: GeneratorName, rules: dict, lm: dict, tokenizer: str | None) -> ProgramGenerator:
    """Build the named generator from its config (plain dicts, as Ray ships them to actors)."""
    if name == "lm":
        from rayflow.data.prox.lm import LMConfig, LMGenerator

        return LMGenerator(LMConfig(**lm))
    from rayflow.data.prox.rules import RulesConfig, RulesGenerator

    return RulesGenerator(RulesConfig(**rules), tokenizer=tokenizer)
