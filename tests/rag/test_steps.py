"""The assistant's pure parts without a model: parsers, metadata routing, BM25 citations, and the flow's
branches (clarify, direct, critique-and-refine, refusals) driven by a scripted reply per prompt kind."""

import asyncio

import pytest

from rayflow.llm import Delta, Generation, PromptRejected
from rayflow.rag import AssistantConfig, Passage, answer, attach_citations, route_metadata
from rayflow.rag import prompts as P
from rayflow.retrieval.filters import Filters

PASSAGES = [
    "Faiss builds HNSW graphs for fast approximate nearest neighbour vector search.",
    "BM25 ranks documents by sparse term overlap with inverse document frequency.",
    "Reciprocal rank fusion merges dense and sparse rankings by their ranks.",
]


def test_parsers_read_only_what_they_expect():
    assert P.parse_route("I think: RETRIEVE.") == "retrieve"
    assert P.parse_route("direct") == "direct"
    assert P.parse_route("blah blah") is None
    assert P.parse_clarify("[ASK] Do you mean image or text retrieval? More text") == (
        "Do you mean image or text retrieval?"
    )
    assert P.parse_clarify("[CLEAR]") is None
    assert P.parse_verdict("ok [NO] it cites nothing about 2021.") == ("no", "it cites nothing about 2021.")
    assert P.parse_verdict("[yes]") == ("yes", "")
    assert P.parse_verdict("maybe") is None
    subs = P.parse_subqueries(
        "1. How does HNSW search work?\n2) How does HNSW search work?\n- Cats and dogs\n3. What is BM25 ranking?",
        "Compare HNSW search with BM25 ranking",
        5,
    )
    # duplicates and a line off the question's topic are dropped
    assert subs == ["How does HNSW search work?", "What is BM25 ranking?"]
    assert P.parse_subqueries("\n".join(f"{i}. ranking idea {i}" for i in range(9)), "ranking", 5) == [
        f"ranking idea {i}" for i in range(5)
    ]


@pytest.mark.parametrize(
    "question, expected",
    [
        ("RAG papers in nlp since 2021", Filters(field=["nlp"], year_min=2021)),
        (
            "computer vision work between 2022 and 2019",
            Filters(field=["computer vision"], year_min=2019, year_max=2022),
        ),
        ("robotics before 2020", Filters(field=["robotics"], year_max=2019)),
        ("vision results after 2020", Filters(field=["vision"], year_min=2021)),
        ("nlp or robotics, 2018-2020", Filters(year_min=2018, year_max=2020)),
        ("what is attention in 2017?", Filters(year_min=2017, year_max=2017)),
        ("nlpx methods", Filters()),
    ],
)
def test_metadata_routing(question, expected):
    assert route_metadata(question, ["nlp", "computer vision", "vision", "robotics"]) == expected


def test_citations_attach_per_sentence_above_threshold():
    text, cited = attach_citations(
        "Vector search uses HNSW graphs [7]. The weather is nice! Sparse BM25 ranking uses term overlap.",
        PASSAGES,
        threshold=0.5,
        per_sentence=1,
    )
    # the model's own marker is gone; numbering follows first citation
    assert text == (
        "Vector search uses HNSW graphs [1]. The weather is nice! Sparse BM25 ranking uses term overlap [2]."
    )
    assert cited == [0, 1]
    # a threshold above every score cites nothing
    assert attach_citations("Vector search uses HNSW graphs.", PASSAGES, threshold=100.0)[1] == []
    # two passages per sentence, best first, and a passage cited twice keeps its number
    text, cited = attach_citations(
        "Fusion merges dense and sparse rankings. Sparse rankings again.", PASSAGES, 0.0, per_sentence=2
    )
    assert text == "Fusion merges dense and sparse rankings [1][2]. Sparse rankings again [1][2]."
    assert cited == [2, 1]


class Index:
    """Three passages over two papers; rerank keeps the search order."""

    def __init__(self):
        self.calls = []

    def fields(self):
        return ["ir", "vision"]

    def search(self, query, top_k, mode, filters):
        self.calls.append((query, mode, filters))
        docs = ["p1", "p2", "p2"]
        return [
            Passage(doc, f"{doc}#{i}", t, 1.0 / (i + 1), f"title {doc}", f"https://x/{doc}")
            for i, (doc, t) in enumerate(zip(docs, PASSAGES))
        ][:top_k]

    def rerank(self, query, passages):
        return passages


def scripted(replies: dict[str, str | None]):
    """A Generate answering each prompt by the first key found in its text (None = refuse it)."""
    seen = []

    async def generate(prompts, params):
        out = []
        for messages in prompts:
            user = messages[-1]["content"]
            reply = next((v for k, v in replies.items() if k in user), "")
            seen.append(user)
            out.append(PromptRejected("too long") if reply is None else Generation(reply, [], "stop"))
        return out

    return generate, seen


def run(question, replies, config=None, **kw):
    generate, seen = scripted(replies)
    index = Index()
    result = asyncio.run(answer(question, generate, index, config or AssistantConfig(), **kw))
    return result, seen, index


def test_full_flow_with_critique_refine_and_rag_checker_fields():
    heard = []  # trace steps and answer texts, in the order the flow tells them
    result, seen, index = run(
        "Compare HNSW vector search and BM25 ranking in ir since 2020",
        {
            "Reply with the single word": "RETRIEVE",
            "clarifying question": "[CLEAR]",
            "sub-questions": "1. How does HNSW vector search work?\n2. How does BM25 ranking work?",
            "Does the paper help": "[YES]",
            "Answer the question using only": "A finding.",
            "Write the answer": "HNSW graphs give fast vector search. BM25 ranking uses term overlap.",
            "Review the answer": "[NO] it misses fusion.",
            "Improve the answer": "HNSW graphs give fast vector search. Rank fusion merges dense and sparse rankings.",
        },
        AssistantConfig(critique_rounds=1, citations_per_sentence=1),
        listener=lambda step: heard.append(step.name),
        writer=lambda text: heard.append((text.kind, text.text, text.reason)),
    )
    assert result.route == "retrieve"
    assert result.subqueries == ["How does HNSW vector search work?", "How does BM25 ranking work?"]
    assert result.filters == Filters(field=["ir"], year_min=2020)
    assert [c[2] for c in index.calls] == [result.filters, result.filters]  # filters reach the index
    assert result.response == (
        "HNSW graphs give fast vector search [1]. Rank fusion merges dense and sparse rankings [2]."
    )
    assert [(c.n, c.chunk_id) for c in result.citations] == [(1, "p1#0"), (2, "p2#2")]
    assert [s.name for s in result.trace] == [
        "route", "clarify", "rewrite", "decompose", "metadata", "retrieve", "rerank", "filter",
        "sub_answer", "answer", "citations", "critique", "refine", "citations",
    ]  # fmt: skip
    assert (
        result.trace[11].detail["verdict"] == "no"
        and result.trace[11].detail["reason"] == "it misses fusion."
    )
    assert {"query_id", "query", "response", "retrieved_context"} <= set(result.model_dump())
    assert result.retrieved_context[0] == {"doc_id": "p1", "text": PASSAGES[0]}
    assert sum("sub-questions" in s for s in seen) == 1
    # The draft is told as soon as it is written, before citations and critique; each change replaces it.
    draft = "HNSW graphs give fast vector search. BM25 ranking uses term overlap."
    assert heard[heard.index("answer") + 1 :] == [
        ("draft", draft, ""),
        "citations",
        ("revision", "HNSW graphs give fast vector search [1]. BM25 ranking uses term overlap [2].", "citations"),
        "critique",
        "refine",
        "citations",
        ("revision", result.response, "critique"),
    ]


def scripted_stream(replies: dict[str, str | None]):
    """A Stream sending the scripted reply a few characters at a time, with the spaces a model writes around it."""

    async def stream(messages, params):
        reply = next((v for k, v in replies.items() if k in messages[-1]["content"]), "")
        if reply is None:
            yield PromptRejected("too long")
            return
        text = f"  {reply} \n"
        for i in range(0, len(text), 3):
            yield Delta(text[i : i + 3], [])
        yield Delta("", [], finish_reason="stop")

    return stream


def test_the_answer_streams_to_the_writer_as_it_is_written():
    replies = {"Reply with the single word": "RETRIEVE", "clarifying question": "[CLEAR]",
               "Write the answer": "HNSW graphs give fast vector search. BM25 ranking uses term overlap.",
               "Review the answer": "[YES]"}  # fmt: skip
    heard = []
    streamed, _, _ = run("Compare HNSW and BM25", replies, stream=scripted_stream(replies),
                         listener=lambda step: heard.append(step.name),
                         writer=lambda text: heard.append((text.kind, text.text)))  # fmt: skip
    plain, _, _ = run("Compare HNSW and BM25", replies)
    assert streamed.response == plain.response  # streaming changes when the text is told, not what it is
    pieces = [t for k, t in (h for h in heard if isinstance(h, tuple)) if k == "delta"]
    assert len(pieces) > 5 and "".join(pieces) == replies["Write the answer"]
    first = next(i for i, h in enumerate(heard) if isinstance(h, tuple))
    assert heard[first - 1] == "sub_answer" and heard.index("answer") > first  # told while being written
    assert heard[heard.index("answer") + 1] == ("draft", replies["Write the answer"])
    refused, _, _ = run("Compare HNSW and BM25", {**replies, "Write the answer": None},
                        stream=scripted_stream({**replies, "Write the answer": None}), writer=heard.append)  # fmt: skip
    assert refused.response == "" and "too long" in next(s.error for s in refused.trace if s.name == "answer")


def test_filter_drops_a_paper_and_yes_stops_the_critique():
    result, _, _ = run(
        "How does vector search work?",
        {"Paper: title p2": "[NO]", "Review the answer": "[YES]", "sub-questions": "nonsense"},
        AssistantConfig(critique_rounds=3),
    )
    assert {p.doc_id for p in result.passages} == {"p1"}
    assert result.subqueries == ["How does vector search work?"]  # nothing usable: the question itself
    assert [s.name for s in result.trace].count("critique") == 1


def test_direct_route_and_one_clarifying_question_per_conversation():
    result, _, _ = run(
        "Hi there", {"Reply with the single word": "DIRECT", "Answer the question briefly": "Hello."}
    )
    assert (result.route, result.response, result.citations) == ("direct", "Hello.", [])
    asks = {"clarifying question": "[ASK] Which kind of retrieval do you mean?"}
    result, _, _ = run("Tell me about retrieval", asks)
    assert (result.route, result.response) == ("clarify", "Which kind of retrieval do you mean?")
    history = [{"role": "user", "content": "Tell me about retrieval"},
               {"role": "assistant", "content": "Which kind of retrieval do you mean?"}]  # fmt: skip
    result, seen, _ = run("Dense vector retrieval", {**asks, "standalone": "How does dense vector retrieval work?"},
                          history=history)  # fmt: skip
    assert result.route == "retrieve" and not any("clarifying question" in s for s in seen)
    assert result.standalone_query == "How does dense vector retrieval work?"


def test_refused_prompts_fall_back_and_are_recorded():
    result, _, _ = run("How does vector search work?", {"": None})  # every prompt refused
    assert result.route == "retrieve" and result.response == ""
    errors = {s.name: s.error for s in result.trace if s.error}
    assert {"route", "decompose", "sub_answer", "answer"} <= set(errors)
    assert all("too long" in e for e in errors.values())


def test_corpus_reader_names_the_bad_line(tmp_path):
    from rayflow.rag.searcher import read_documents

    path = tmp_path / "docs.jsonl"
    path.write_text('{"doc_id": "a", "text": "x", "metadata": {"year": 2020}}\n\n{"text": "no id"}\n')
    with pytest.raises(ValueError, match=r"docs.jsonl, line 3: .*doc_id"):
        read_documents(path)
    path.write_text('{"doc_id": "a", "text": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        read_documents(path)
    path.write_text('{"doc_id": "a", "text": "x", "metadata": {"year": 2020}}\n')
    assert read_documents(path)[0].metadata == {"year": 2020}
