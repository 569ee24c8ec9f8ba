"""Assessment+ sessions without Serve: the agent (examiner and grader) is the real tiny model on the hf backend;
the target is scripted, so transcripts can be compared. A fixed seed gives an identical transcript; a session
whose target fails half-way stops with status `error` and resumes to the transcript an uninterrupted run has.
Also the grader's parser and the score formulas, by hand."""

import asyncio

import pytest

from rayflow.agent import SessionConfig, SessionStore, items_from_qa, run_session, session_spec, threaded
from rayflow.agent.policy import RandomPolicy
from rayflow.agent.prompts import parse_grade
from rayflow.agent.scores import depths, item_scores, session_scores
from rayflow.llm import EngineConfig, Generation, build_engine
from tests.conftest import REPO

CFG = SessionConfig(question_max_tokens=16, answer_max_tokens=16, grade_max_tokens=24, history_turns=2)
ITEMS = items_from_qa(REPO / "examples/agent/qa.jsonl")[:2]


@pytest.fixture(scope="module")
def agent(tiny_model):
    return threaded(
        build_engine(EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=1024))
    )


def scripted_target(fail_after: int | None = None):
    """Answers each question with a fixed function of it; raises on call `fail_after` (a server going down)."""
    calls = []

    async def generate(prompts, params):
        calls.append(prompts)
        if fail_after is not None and len(calls) > fail_after:
            raise ConnectionError("target went away")
        question = prompts[0][-1]["content"]
        return [Generation(f"The answer to '{question[:30]}' is 14 days.", [], "stop")]

    return generate


def run(store, sid, target, agent):
    return asyncio.run(run_session(store, sid, target, agent, RandomPolicy(), CFG))


def transcript(store, sid):
    return [{k: t[k] for k in ("item_index", "turn", "type", "question", "answer", "point_scores", "state")}
            for t in store.turns(sid)]  # fmt: skip


def test_a_fixed_seed_gives_an_identical_transcript(tmp_path, agent):
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        store = SessionStore(f"sqlite:///{tmp_path / name}.db")
        sid = store.create(session_spec({"model": "scripted"}, ITEMS, 5, "random", seed))
        done = run(store, sid, scripted_target(), agent)
        assert done["status"] == "done" and done["scores"]["turns"] == 10
        runs.append(transcript(store, sid))
    assert runs[0] == runs[1]
    assert [t["type"] for t in runs[0]] != [t["type"] for t in runs[2]]
    first = runs[0][0]
    assert first["type"] == "seed" and first["question"] == ITEMS[0].seed_question
    assert first["answer"].startswith("The answer to 'Within how many days")


def test_a_half_run_session_resumes(tmp_path, agent):
    store = SessionStore(f"sqlite:///{tmp_path / 's.db'}")
    spec = session_spec({"model": "scripted"}, ITEMS, 4, "random", 9)
    sid = store.create(spec)
    stopped = run(store, sid, scripted_target(fail_after=5), agent)
    assert stopped["status"] == "error" and "ConnectionError: target went away" in stopped["error"]
    assert len(store.turns(sid)) == 5  # turns persisted as they finished: item 0 whole, item 1's first
    resumed = run(store, sid, scripted_target(), agent)
    assert resumed["status"] == "done" and len(store.turns(sid)) == 8
    reference = SessionStore(f"sqlite:///{tmp_path / 'r.db'}")
    rid = reference.create(spec)
    run(reference, rid, scripted_target(), agent)
    assert transcript(store, sid) == transcript(reference, rid)
    # The random model's grades do not parse: counted, never fatal.
    assert resumed["scores"]["parse_failures"] == sum(not t["parse_ok"] for t in store.turns(sid))


def test_grade_parser():
    text = "P1: 2 - states the 14 days\n**P2**: 1/2 | partly\nP2: 0 - second line ignored\nP7: 2 - no such point\nnoise"
    scores, reasons = parse_grade(text, 3)
    assert scores == [1.0, 0.5, None] and reasons[:2] == ["states the 14 days", "partly"]
    assert parse_grade("", 2) == ([None, None], ["", ""])


def test_score_formulas():
    turns = [{"type": t, "score": s, "item_id": "i"} for t, s in
             [("seed", 0.8), ("deepen", 0.6), ("challenge", 0.2), ("deepen", 0.4), ("switch_topic", None)]]  # fmt: skip
    assert depths([t["type"] for t in turns]) == [0, 1, 1, 2, 0]
    s = item_scores(turns)
    assert s["professionalism"] == pytest.approx(0.5)
    assert s["stability"] == pytest.approx(1 - 0.4)  # the challenge moved the score by 0.4
    # Least-squares slope of (0, .8), (1, .6), (1, .2), (2, .4) is -0.2: dynamism 0.8.
    assert s["dynamism"] == pytest.approx(0.8)
    assert s["overall"] == pytest.approx((0.5 + 0.6 + 0.8) / 3)
    whole = session_scores([*turns, {"type": "seed", "score": 1.0, "item_id": "j", "parse_ok": False}])
    assert whole["professionalism"] == pytest.approx(0.75) and whole["stability"] == pytest.approx(0.6)
    assert whole["parse_failures"] == 1 and whole["graded"] == 5


def test_store_keeps_benchmarks_and_lists_sessions_by_status(tmp_path):
    store = SessionStore(f"sqlite:///{tmp_path / 'b.db'}")
    bid = store.add_benchmark([i.model_dump() for i in ITEMS], {"source": "qa"})
    assert store.benchmark(bid) == [i.model_dump() for i in ITEMS] and store.benchmark("nope") is None
    sid = store.create(session_spec({"model": "m"}, ITEMS, 2, "fixed", 0))
    assert store.ids("created") == [sid] and store.ids("running") == []
    store.set_status(sid, "running")
    assert store.ids("running") == [sid] and store.get(sid)["status"] == "running"


def test_report_has_scores_topics_quotes_and_a_plot(tmp_path):
    from rayflow.agent import comparative_report, plot_target, target_report

    def turn(item, topic, n, kind, score, answer):
        return {"item_id": item, "topic": topic, "turn": n, "type": kind, "score": score, "parse_ok": True,
                "question": f"Q{n} on {topic}?", "answer": answer, "reasons": [f"reason {n}"], "error": None}  # fmt: skip

    turns = [turn("a", "Dog tax", 0, "seed", 1.0, "Ninety euros."), turn("a", "Dog tax", 1, "challenge", 0.5, "Maybe 120."),
             turn("b", "Noise rules", 0, "seed", 0.0, "No idea."), turn("b", "Noise rules", 1, "deepen", 0.5, "10 p.m.")]  # fmt: skip
    sessions = [{"id": "s", "turns": turns}]
    md = target_report("model-x", sessions, plot="x.png")
    assert md.startswith("# TestAgent report: model-x") and "![scores](x.png)" in md
    assert "| professionalism | 0.500 |" in md and "| stability | 0.500 |" in md
    assert "| Dog tax | 2 | 0.750 | 0.500 |" in md and "| Noise rules | 2 | 0.250 | n/a |" in md
    assert "> A: Ninety euros." in md and "> A: No idea." in md and "Grader: reason 0" in md
    assert "**under challenge or rephrasing (stability)**" in md and "> A: Maybe 120." in md
    plot_target("model-x", sessions, tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    both = comparative_report({"model-x": sessions, "model-y": sessions})
    assert "| model-x | 1 | 4 | 0.500 |" in both and "## Target: model-y" in both
