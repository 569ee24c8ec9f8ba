"""The research assistant's flow (after OpenResearcher), one plain function per step, run by `answer`:

    route -> clarify (at most once, first turn only) -> rewrite from history -> decompose (<= 5 sub-queries)
    -> metadata routing -> hybrid retrieval per sub-query -> rerank -> per-source filtering -> sub-answers
    -> final answer -> citations (per sentence, BM25) -> self-critique ([YES] stops, [NO] + reason refines)

The answer's text is told to a `writer` while the model writes it: given a `stream` (an async source of the
engine's deltas, `rayflow.llm.Stream`), the final answer (and a direct one) is generated token by token and
each new piece is told as `AnswerText("delta", piece)`; the whole text follows as `AnswerText("draft", ...)`
once written (before citations and self-critique, so a page shows it while the flow goes on), and again each
time it changes (`AnswerText("revision", ..., reason="citations" | "critique")`); the last one told is the
response. Without a stream or a writer the answer is one batched `generate` call, as every other step's.

Every model call goes through a `Generate` function (a local engine via `from_engine`, or the Serve LLM
deployment via `rayflow.serving.llm.from_deployment`); each step's prompt is in `rayflow.rag.prompts`. A reply
the parser cannot use, or a prompt the engine refuses, makes that step fall back to its safe default (route:
retrieve; clarify: ask nothing; rewrite/decompose: the question itself; filter: keep the source; critique:
stop), recorded in the trace with `parsed=False` or `error`, and the run goes on. Retrieval is whatever
`Searcher` the caller gives (the Serve app's live index; tests' index over the shipped papers).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from rayflow.config import Config
from rayflow.eval.safety.llm import Generate
from rayflow.llm import Message, PromptRejected, SamplingParams, Stream
from rayflow.rag import prompts as P
from rayflow.rag.citations import attach_citations
from rayflow.rag.metadata import route_metadata
from rayflow.rag.trace import Trace, TraceStep
from rayflow.retrieval.filters import Filters

Mode = Literal["dense", "sparse", "hybrid"]


class AssistantConfig(Config):
    """How the assistant retrieves, writes, cites and critiques."""

    mode: Mode = Field("hybrid", description="retrieval per sub-query: dense, sparse or hybrid (RRF)")
    candidates: int = Field(20, ge=1, description="chunks retrieved per sub-query, before rerank")
    top_k: int = Field(4, ge=1, description="chunks kept per sub-query after rerank (a request may override)")
    max_subqueries: int = Field(5, ge=1, le=5, description="most sub-queries a question is split into")
    clarify: bool = Field(True, description="may ask one clarifying question on a conversation's first turn")
    source_filter: bool = Field(True, description="ask the model whether each retrieved paper is relevant")
    min_score: float | None = Field(None, description="drop reranked chunks scoring below this; None = keep")
    max_passages: int = Field(8, ge=1, description="passages the final answer is written from (best first)")
    passage_chars: int = Field(600, ge=20, description="most characters of one passage shown to the model")
    context_chars: int = Field(
        2400, ge=20, description="most characters of passages (or findings) in one prompt, shared out evenly"
    )
    citation_threshold: float = Field(
        0.5, ge=0, description="BM25 score (over the answer's passages) a sentence needs to cite a passage"
    )
    citations_per_sentence: int = Field(2, ge=1, description="most passages one sentence cites")
    critique_rounds: int = Field(1, ge=0, description="most self-critique rounds; 0 = no critique")
    step_max_tokens: int = Field(48, ge=1, description="new tokens for routing, rewriting and checks")
    answer_max_tokens: int = Field(192, ge=1, description="new tokens for sub-answers and the answer")
    temperature: float = Field(0.0, ge=0, description="0 = greedy: the same question, the same run")


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk; `score` is the ranker's (RRF, cosine or BM25, then the reranker's)."""

    doc_id: str
    chunk_id: str
    text: str
    score: float
    title: str = ""
    url: str = ""


class Searcher(Protocol):
    """What the flow needs from an index."""

    def fields(self) -> list[str]:
        """The values of the `field` metadata the index holds (for metadata routing)."""
        ...

    def search(self, query: str, top_k: int, mode: Mode, filters: Filters | None) -> list[Passage]:
        """Best first, filters applied before ranking."""
        ...

    def rerank(self, query: str, passages: list[Passage]) -> list[Passage]:
        """The same passages re-scored against `query`, best first."""
        ...


class Citation(BaseModel):
    n: int
    doc_id: str
    chunk_id: str
    title: str
    url: str


class PassageOut(BaseModel):
    doc_id: str
    chunk_id: str
    title: str
    url: str
    text: str
    score: float


class AssistantAnswer(BaseModel):
    """One answer. `query_id`, `query`, `response` and `retrieved_context` are RAGChecker's input fields."""

    query_id: str
    query: str
    response: str
    citations: list[Citation] = Field(default_factory=list)
    retrieved_context: list[dict[str, str]] = Field(default_factory=list, description="[{doc_id, text}]")
    passages: list[PassageOut] = Field(default_factory=list, description="the answer's passages with scores")
    route: Literal["retrieve", "direct", "clarify"]
    standalone_query: str
    subqueries: list[str] = Field(default_factory=list)
    filters: Filters = Filters()
    trace: list[TraceStep] = Field(default_factory=list)
    prompt_version: str = P.PROMPT_VERSION


@dataclass(frozen=True)
class AnswerText:
    """The answer's text: `delta` (the next piece as the model writes it), `draft` (the whole text as written,
    before citations and critique) or `revision` (replacing what was told before; `reason` is `citations`
    or `critique`)."""

    kind: Literal["delta", "draft", "revision"]
    text: str
    reason: str = ""


@dataclass
class Run:
    """What every step reads: the model, the index, the settings, and the trace it records into."""

    generate: Generate
    searcher: Searcher
    config: AssistantConfig
    trace: Trace
    writer: Callable[[AnswerText], Any] | None = None
    stream: Stream | None = None
    told: str | None = None  # the answer text last told to the writer

    def tell(self, kind: Literal["draft", "revision"], text: str, reason: str = "") -> None:
        """Tell the writer the answer's text when it differs from what it was told last."""
        if self.writer is not None and text != self.told:
            self.told = text
            self.writer(AnswerText(kind, text, reason))

    async def ask(self, users: Sequence[str], max_tokens: int) -> list[str | PromptRejected]:
        """One model call for several prompts (batched together); each reply's text, or its refusal."""
        params = SamplingParams(temperature=self.config.temperature, max_tokens=max_tokens, seed=0)
        out = await self.generate([P.chat(u) for u in users], params)
        return [o if isinstance(o, PromptRejected) else o.text.strip() for o in out]

    async def write(self, user: str, max_tokens: int) -> str | PromptRejected:
        """The reply to one prompt, like `ask`, but streamed to the writer piece by piece as the model writes
        it when the run has both a stream and a writer. The pieces join to the stripped reply."""
        if self.stream is None or self.writer is None:
            [reply] = await self.ask([user], max_tokens)
            return reply
        params = SamplingParams(temperature=self.config.temperature, max_tokens=max_tokens, seed=0)
        text, trim = [], _Strip()
        async for delta in self.stream(P.chat(user), params):
            if isinstance(delta, PromptRejected):
                return delta
            piece = trim.add(delta.text)
            if piece:
                text.append(piece)
                self.writer(AnswerText("delta", piece))
        return "".join(text)

    def passages(self, passages: Sequence[Passage], budget: int | None = None) -> str:
        """Numbered passages for a prompt, each cut to its share of `budget` characters (default
        `context_chars`) and to `passage_chars`, so a prompt stays inside the model's context however many
        passages there are; "(none)" for none."""
        if not passages:
            return "(none)"
        share = min(self.config.passage_chars, (budget or self.config.context_chars) // len(passages))
        return P.format_passages([p.text[:share] for p in passages])


class _Strip:
    """Streamed text with leading whitespace dropped and trailing whitespace held until more text follows, so
    the pieces join to the whole reply `.strip()`ped, as `Run.ask` returns it."""

    def __init__(self):
        self.started = False
        self.pending = ""

    def add(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        text = self.pending + text
        body = text.rstrip()
        self.pending = text[len(body) :]
        return body


def _error(reply: str | PromptRejected) -> str | None:
    return f"prompt rejected: {reply.reason}" if isinstance(reply, PromptRejected) else None


def _text(reply: str | PromptRejected) -> str:
    return "" if isinstance(reply, PromptRejected) else reply


# --- the steps ---


async def route(run: Run, question: str) -> str:
    """ "retrieve" (the full pipeline) or "direct" (answer from the model alone); unparsed -> retrieve."""
    t = run.trace.start()
    [reply] = await run.ask([P.ROUTE.format(question=question)], run.config.step_max_tokens)
    decision = P.parse_route(_text(reply))
    run.trace.record(
        "route",
        t,
        detail={"decision": decision or "retrieve", "raw": _text(reply)},
        prompt_version=P.PROMPT_VERSION,
        parsed=decision is not None,
        error=_error(reply),
    )
    return decision or "retrieve"


async def clarify(run: Run, question: str) -> str | None:
    """A clarifying question when `question` is too ambiguous to research, else None."""
    t = run.trace.start()
    [reply] = await run.ask([P.CLARIFY.format(question=question)], run.config.step_max_tokens)
    asked = P.parse_clarify(_text(reply))
    run.trace.record(
        "clarify",
        t,
        detail={"question": asked, "raw": _text(reply)},
        prompt_version=P.PROMPT_VERSION,
        parsed=asked is not None or "[CLEAR]" in _text(reply),
        error=_error(reply),
    )
    return asked


async def rewrite(run: Run, question: str, history: Sequence[Message]) -> str:
    """`question` made standalone from the conversation (unchanged without history or on a bad reply)."""
    t = run.trace.start()
    if not history:
        run.trace.record("rewrite", t, detail={"query": question, "skipped": "no history"})
        return question
    prompt = P.REWRITE.format(history=P.format_history(history), question=question)
    [reply] = await run.ask([prompt], run.config.step_max_tokens)
    rewritten = P.parse_rewrite(_text(reply))
    run.trace.record(
        "rewrite",
        t,
        detail={"query": rewritten or question, "raw": _text(reply)},
        prompt_version=P.PROMPT_VERSION,
        parsed=rewritten is not None,
        error=_error(reply),
    )
    return rewritten or question


async def decompose(run: Run, question: str) -> list[str]:
    """At most `max_subqueries` sub-queries on the question's topic; [question] when none are usable."""
    t = run.trace.start()
    n = run.config.max_subqueries
    [reply] = await run.ask([P.DECOMPOSE.format(n=n, question=question)], run.config.step_max_tokens * n)
    subqueries = P.parse_subqueries(_text(reply), question, n)
    run.trace.record(
        "decompose",
        t,
        detail={"subqueries": subqueries or [question], "raw": _text(reply)},
        prompt_version=P.PROMPT_VERSION,
        parsed=bool(subqueries),
        error=_error(reply),
    )
    return subqueries or [question]


def metadata(run: Run, question: str) -> Filters:
    """Field and year filters named in the question (see `rayflow.rag.metadata`)."""
    t = run.trace.start()
    filters = route_metadata(question, run.searcher.fields())
    run.trace.record("metadata", t, detail=filters.model_dump())
    return filters


async def retrieve(run: Run, subqueries: Sequence[str], filters: Filters) -> list[list[Passage]]:
    """`candidates` chunks per sub-query from the index (`mode`), filters applied before ranking."""
    t = run.trace.start()
    found = [
        await asyncio.to_thread(
            run.searcher.search,
            q,
            run.config.candidates,
            run.config.mode,
            filters if filters.active else None,
        )
        for q in subqueries
    ]
    run.trace.record("retrieve", t, detail={"mode": run.config.mode, "hits": [_brief(h) for h in found]})
    return found


async def rerank(
    run: Run, subqueries: Sequence[str], found: list[list[Passage]], top_k: int
) -> list[list[Passage]]:
    """Each sub-query's candidates re-scored against it; the best `top_k` above `min_score` kept."""
    t = run.trace.start()
    kept = []
    for q, passages in zip(subqueries, found):
        ranked = await asyncio.to_thread(run.searcher.rerank, q, passages) if passages else []
        if run.config.min_score is not None:
            ranked = [p for p in ranked if p.score >= run.config.min_score]
        kept.append(ranked[:top_k])
    run.trace.record("rerank", t, detail={"top_k": top_k, "kept": [_brief(k) for k in kept]})
    return kept


async def filter_sources(
    run: Run, subqueries: Sequence[str], kept: list[list[Passage]]
) -> list[list[Passage]]:
    """Per sub-query, group its chunks by paper and drop the papers the model calls irrelevant ([NO]);
    a paper whose reply has no verdict is kept."""
    t = run.trace.start()
    if not run.config.source_filter:
        run.trace.record("filter", t, detail={"skipped": "source_filter is off"})
        return kept
    jobs: list[tuple[int, str]] = []  # (sub-query index, doc_id)
    users = []
    for i, (q, passages) in enumerate(zip(subqueries, kept)):
        for doc_id, group in _by_source(passages).items():
            jobs.append((i, doc_id))
            users.append(
                P.FILTER.format(question=q, title=group[0].title or doc_id, passages=run.passages(group))
            )
    replies = await run.ask(users, run.config.step_max_tokens) if users else []
    dropped, unparsed, errors = set(), 0, []
    for job, reply in zip(jobs, replies):
        verdict = P.parse_verdict(_text(reply))
        unparsed += verdict is None
        if _error(reply):
            errors.append(f"{job[1]}: {_error(reply)}")
        if verdict is not None and verdict[0] == "no":
            dropped.add(job)
    out = [[p for p in passages if (i, p.doc_id) not in dropped] for i, passages in enumerate(kept)]
    run.trace.record(
        "filter",
        t,
        detail={"sources": len(jobs), "dropped": sorted(d for _, d in dropped), "unparsed_kept": unparsed},
        prompt_version=P.PROMPT_VERSION,
        parsed=unparsed == 0,
        error="; ".join(errors) or None,
    )
    return out


async def sub_answers(run: Run, subqueries: Sequence[str], kept: list[list[Passage]]) -> list[str]:
    """One short answer per sub-query from its own passages (one batched model call)."""
    t = run.trace.start()
    users = [
        P.SUB_ANSWER.format(passages=run.passages(ps), question=q)
        for q, ps in zip(subqueries, kept)
    ]
    replies = await run.ask(users, run.config.answer_max_tokens)
    answers = [_text(r) for r in replies]
    errors = [f"sub-query {i + 1}: {_error(r)}" for i, r in enumerate(replies) if _error(r)]
    run.trace.record(
        "sub_answer",
        t,
        detail={"answers": answers},
        prompt_version=P.PROMPT_VERSION,
        error="; ".join(errors) or None,
    )
    return answers


async def write_answer(run: Run, question: str, findings: Sequence[str], passages: Sequence[Passage]) -> str:
    """The final answer from the sub-answers and the passages (no citations yet); streamed to the writer as it
    is written when the run has a stream."""
    t = run.trace.start()
    # Passages and findings share the prompt's budget half and half.
    half = run.config.context_chars // 2
    findings = [f for f in findings if f]
    listed = "\n".join(f"- {f[: half // len(findings)]}" for f in findings) or "(none)"
    prompt = P.FINAL.format(
        passages=run.passages(passages, half),
        findings=listed,
        question=question,
    )
    reply = await run.write(prompt, run.config.answer_max_tokens)
    run.trace.record(
        "answer", t, detail={"text": _text(reply)}, prompt_version=P.PROMPT_VERSION, error=_error(reply)
    )
    return _text(reply)


def cite(run: Run, text: str, passages: Sequence[Passage]) -> tuple[str, list[Citation]]:
    """`text` with `[n]` after each sentence that matches a passage by BM25 above `citation_threshold`."""
    t = run.trace.start()
    cited_text, order = attach_citations(
        text, [p.text for p in passages], run.config.citation_threshold, run.config.citations_per_sentence
    )
    citations = [
        Citation(
            n=n,
            doc_id=passages[i].doc_id,
            chunk_id=passages[i].chunk_id,
            title=passages[i].title,
            url=passages[i].url,
        )
        for n, i in enumerate(order, start=1)
    ]
    run.trace.record(
        "citations",
        t,
        detail={"cited": [c.chunk_id for c in citations], "threshold": run.config.citation_threshold},
    )
    return cited_text, citations


async def critique(
    run: Run, question: str, answer: str, passages: Sequence[Passage]
) -> tuple[str, str] | None:
    """("yes", "") or ("no", reason); None when the reply has no verdict (the flow then stops critiquing)."""
    t = run.trace.start()
    prompt = P.CRITIQUE.format(
        passages=run.passages(passages),
        question=question,
        answer=answer,
    )
    [reply] = await run.ask([prompt], run.config.step_max_tokens)
    verdict = P.parse_verdict(_text(reply))
    run.trace.record(
        "critique",
        t,
        detail={
            "verdict": verdict[0] if verdict else None,
            "reason": verdict[1] if verdict else "",
            "raw": _text(reply),
        },
        prompt_version=P.PROMPT_VERSION,
        parsed=verdict is not None,
        error=_error(reply),
    )
    return verdict


async def refine(run: Run, question: str, answer: str, reason: str, passages: Sequence[Passage]) -> str:
    """The answer rewritten to address the critique; the old one when the model gives nothing."""
    t = run.trace.start()
    prompt = P.REFINE.format(
        critique=reason or "it is incomplete",
        passages=run.passages(passages),
        question=question,
        answer=answer,
    )
    [reply] = await run.ask([prompt], run.config.answer_max_tokens)
    run.trace.record(
        "refine", t, detail={"text": _text(reply)}, prompt_version=P.PROMPT_VERSION, error=_error(reply)
    )
    return _text(reply) or answer


# --- the flow ---


async def answer(
    question: str,
    generate: Generate,
    searcher: Searcher,
    config: AssistantConfig,
    history: Sequence[Message] = (),
    top_k: int | None = None,
    query_id: str | None = None,
    listener: Callable[[TraceStep], Any] | None = None,
    writer: Callable[[AnswerText], Any] | None = None,
    stream: Stream | None = None,
) -> AssistantAnswer:
    """Answer `question` (the user's latest message; `history` the conversation before it, as chat
    messages). `listener` hears each trace step as it is recorded; `writer` the answer's text as it is written
    (piece by piece when `stream` is given) and each time it changes (see the module docstring)."""
    run = Run(generate, searcher, config, Trace(listener), writer, stream)
    base = {"query_id": query_id or uuid.uuid4().hex[:12], "query": question}

    decision = await route(run, question)
    if decision == "direct":
        t = run.trace.start()
        reply = await run.write(P.DIRECT.format(question=question), config.answer_max_tokens)
        run.trace.record(
            "answer", t, detail={"text": _text(reply)}, prompt_version=P.PROMPT_VERSION, error=_error(reply)
        )
        run.tell("draft", _text(reply))
        return AssistantAnswer(
            **base, response=_text(reply), route="direct", standalone_query=question, trace=run.trace.steps
        )
    # At most one clarifying question per conversation: only its first turn may ask.
    if config.clarify and not any(m["role"] == "assistant" for m in history):
        asked = await clarify(run, question)
        if asked is not None:
            run.tell("draft", asked)
            return AssistantAnswer(
                **base, response=asked, route="clarify", standalone_query=question, trace=run.trace.steps
            )

    standalone = await rewrite(run, question, history)
    subqueries = await decompose(run, standalone)
    filters = metadata(run, standalone)
    found = await retrieve(run, subqueries, filters)
    kept = await rerank(run, subqueries, found, top_k or config.top_k)
    kept = await filter_sources(run, subqueries, kept)
    findings = await sub_answers(run, subqueries, kept)
    passages = _union(kept)[: config.max_passages]

    draft = await write_answer(run, standalone, findings, passages)
    run.tell("draft", draft)
    text, citations = cite(run, draft, passages)
    run.tell("revision", text, "citations")
    for _ in range(config.critique_rounds):
        verdict = await critique(run, standalone, text, passages)
        if verdict is None or verdict[0] == "yes":
            break
        draft = await refine(run, standalone, draft, verdict[1], passages)
        text, citations = cite(run, draft, passages)
        run.tell("revision", text, "critique")

    return AssistantAnswer(
        **base,
        response=text,
        citations=citations,
        retrieved_context=[{"doc_id": p.doc_id, "text": p.text} for p in passages],
        passages=[
            PassageOut(
                doc_id=p.doc_id, chunk_id=p.chunk_id, title=p.title, url=p.url, text=p.text, score=p.score
            )
            for p in passages
        ],
        route="retrieve",
        standalone_query=standalone,
        subqueries=subqueries,
        filters=filters,
        trace=run.trace.steps,
    )


def _by_source(passages: Sequence[Passage]) -> dict[str, list[Passage]]:
    groups: dict[str, list[Passage]] = {}
    for p in passages:
        groups.setdefault(p.doc_id, []).append(p)
    return groups


def _union(kept: list[list[Passage]]) -> list[Passage]:
    """Every sub-query's passages once (by chunk id, at its best score), best first."""
    best: dict[str, Passage] = {}
    for passages in kept:
        for p in passages:
            if p.chunk_id not in best or p.score > best[p.chunk_id].score:
                best[p.chunk_id] = p
    return sorted(best.values(), key=lambda p: (-p.score, p.chunk_id))


def _brief(passages: Sequence[Passage]) -> list[dict]:
    return [{"chunk_id": p.chunk_id, "score": round(p.score, 4)} for p in passages]
