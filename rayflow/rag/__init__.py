"""The research assistant (OpenResearcher's flow) over rayflow's retrieval and engine layers.

    from rayflow.eval.safety.llm import from_engine
    from rayflow.rag import AssistantConfig, answer
    result = await answer("How do hybrid retrievers fuse rankings?", from_engine(engine), searcher,
                          AssistantConfig())
    result.response, result.citations, result.trace       # "... [1].", [Citation(n=1, ...)], [TraceStep, ...]
    # `writer` hears the answer piece by piece as the model writes it (rayflow.llm.stream_from_engine):
    await answer("...", from_engine(engine), searcher, AssistantConfig(), writer=print,
                 stream=stream_from_engine(engine))

Modules: `flow` (the steps and `answer`), `prompts` (versioned prompts and their parsers), `metadata` (field
and year filters from the question), `citations` (per-sentence BM25 citations), `trace`, `searcher` (the
flow's view of a `rayflow.retrieval` index), `static/` (the web page the Serve app serves).
"""

from rayflow.rag.citations import attach_citations
from rayflow.rag.flow import AnswerText, AssistantAnswer, AssistantConfig, Citation, Passage, Searcher, answer
from rayflow.rag.metadata import route_metadata
from rayflow.rag.prompts import PROMPT_VERSION
from rayflow.rag.trace import Trace, TraceStep

__all__ = [
    "PROMPT_VERSION",
    "AnswerText",
    "AssistantAnswer",
    "AssistantConfig",
    "Citation",
    "Passage",
    "Searcher",
    "Trace",
    "TraceStep",
    "answer",
    "attach_citations",
    "route_metadata",
]
