"""ProX: data refinement as programming (Zhou et al., 2024), at corpus scale on Ray Data.

A small LM (or the rules generator) writes a short program per document; rayflow parses it with `ast`, never
executes it as code, and applies it with the reference executor's semantics. See docs/prox.md.
"""

from rayflow.data.prox.executor import (
    ChunkResult,
    DocResult,
    ExecutorConfig,
    execute_chunk_program,
    execute_doc_program,
)

__all__ = ["ChunkResult", "DocResult", "ExecutorConfig", "execute_chunk_program", "execute_doc_program"]
