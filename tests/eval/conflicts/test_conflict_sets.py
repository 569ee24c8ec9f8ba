"""ECon's conflict sets as plain Python: types, minimal edits, how answer/lexical/factoid pairs are assembled,
the prompts' parsers, the readers' error records, and the shipped conflict set."""

import json

import pytest

from rayflow.eval.conflicts.make import parse_question, read_questions
from rayflow.eval.conflicts.pairs import (
    TYPES,
    answer_pairs,
    conflict_type,
    factoid_pairs,
    minimal_edit,
    read_pairs,
)
from rayflow.eval.conflicts.prompts import normalize, parse_answers, statement
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("Portsmouth", "Plymouth", "entity"),
        ("twelve arches", "nine arches", "number"),
        ("It weighs 3.5 tonnes.", "It weighs 4 tonnes.", "number"),
        ("It opened in 1887.", "It opened in 1902.", "temporal"),
        ("It opens in March.", "It opens in October.", "temporal"),
        ("The line runs to the summit.", "The line does not run to the summit.", "negation"),
        ("The line runs to the summit.", "The line doesn't run to the summit.", "negation"),
        ("The lake is warmer than the sea.", "The lake is colder than the sea.", "degree"),
        ("Same words here.", "same words, here", None),
    ],
)
def test_conflict_type_reads_what_the_two_sides_differ_in(a, b, expected):
    assert conflict_type(a, b) == expected
    assert conflict_type(b, a) == expected  # symmetric


def test_minimal_edit_replaces_whole_words_only():
    text = "Portsmouth's museum: Portsmouth hosts it, not Portsmouthshire."
    assert minimal_edit(text, "portsmouth", "Plymouth") == "Plymouth's museum: Plymouth hosts it, not Portsmouthshire."
    assert minimal_edit(text, "Leeds", "York") is None
    assert minimal_edit(text, " ", "York") is None


def test_answer_pairs_build_econ_triples_and_lexical_sets():
    ev = {"A": ["a1 says A", "a2 says A"], "B": ["b1 says B"], "C": []}
    pairs = answer_pairs("q", "Q?", ["A", "B", "C"], ev, {("A", "B"): "a1 says B"})
    # Only (A, B) has two texts for one side and one for the other; C has none.
    by_id = {p.id: p for p in pairs}
    assert sorted(by_id) == [f"q/0-1/{k}/{n}" for k in ("answer", "lexical") for n in range(3)]
    triple = [(p.evidence_a, p.evidence_b, p.conflict) for p in pairs if p.kind == "answer"]
    assert triple == [("a1 says A", "b1 says B", True), ("a2 says A", "b1 says B", True),
                      ("a1 says A", "a2 says A", False)]  # fmt: skip
    lexical = [(p.evidence_a, p.evidence_b, p.conflict) for p in pairs if p.kind == "lexical"]
    assert lexical == [("a1 says A", "a1 says B", True), ("a2 says A", "a1 says B", True),
                       ("b1 says B", "a1 says B", False)]  # fmt: skip
    assert {p.type for p in pairs} == {"entity"} and {p.set_id for p in pairs} == {"q/0-1"}
    # The answer with two texts plays `a` whatever its position; without an edit there is no lexical set.
    swapped = answer_pairs("q", "Q?", ["B", "A"], ev, {})
    assert (swapped[0].evidence_a, swapped[0].evidence_b) == ("a1 says A", "b1 says B")
    assert {p.kind for p in swapped} == {"answer"}
    assert answer_pairs("q", "Q?", ["A", "B"], {"A": ["x"], "B": ["y"]}, {}) == []


def test_factoid_pairs_grade_conflict_and_corroboration():
    facts = ["F0 in 1936.", "F1 runs.", "F2 ran daily."]
    negations = ["F0 in 1962.", None, "F2 never ran daily."]  # F1 could not be negated
    pairs = factoid_pairs("s", "Q?", facts, negations)
    assert all(p.conflict and p.kind == "factoid" for p in pairs)
    conflict = {p.intensity: p for p in pairs if p.intensity.startswith("negated")}
    assert sorted(conflict) == ["negated:1", "negated:2"]  # two negatable facts
    assert conflict["negated:1"].evidence_a == "F0 in 1936. F1 runs. F2 ran daily."
    assert conflict["negated:1"].evidence_b == "F0 in 1962. F1 runs. F2 ran daily."
    assert conflict["negated:2"].evidence_b == "F0 in 1962. F1 runs. F2 never ran daily."
    assert conflict["negated:1"].type == "temporal" and conflict["negated:2"].type is None  # mixed types
    shared = {p.intensity: p for p in pairs if p.intensity.startswith("shared")}
    assert sorted(shared) == ["shared:0", "shared:1", "shared:2"]
    assert (shared["shared:0"].evidence_a, shared["shared:0"].evidence_b) == ("F0 in 1936.", "F0 in 1962.")
    assert shared["shared:2"].evidence_b == "F0 in 1962. F1 runs. F2 ran daily."
    assert factoid_pairs("s", "Q?", facts, [None, None, None]) == []


def test_parsers_and_statements():
    text = "1. Paris\n- paris\n* Lyon.\n\n(3) " + "x" * 200 + "\nb) Nice\nMarseille"
    assert parse_answers(text, 3) == ["Paris", "Lyon", "Nice"]
    assert statement("Which city hosts it", "Paris") == "Which city hosts it? Paris"
    assert statement("Which city hosts it?", " Paris ") == "Which city hosts it? Paris"
    assert normalize("The  Velden, Viaduct!") == "velden viaduct"


def test_readers_keep_good_lines_and_name_the_field_of_bad_ones(tmp_path):
    good = {"id": "p1", "evidence_a": "x", "evidence_b": "y", "conflict": True}
    lines = [json.dumps(good), "not json", json.dumps({**good, "id": "p2", "type": "colour"}),
             json.dumps({**good, "conflict": "maybe", "id": "p3"}), json.dumps(good)]  # fmt: skip
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    rows, errors = read_pairs(str(tmp_path / "pairs.jsonl"))
    assert [r["id"] for r in rows] == ["p1"] and rows[0]["line"] == 1
    reasons = {e["line"]: e["reason"] for e in errors}
    assert sorted(reasons) == [2, 3, 4, 5]
    assert reasons[2].startswith("invalid JSON") and "'type'" in reasons[3] and "'conflict'" in reasons[4]
    assert "repeats" in reasons[5]

    assert parse_question('{"question": "Q?", "answers": ["A"]}')[1].startswith("field 'answers'")
    assert parse_question('{"question": ""}')[1].startswith("field 'question'")
    assert parse_question('{"question": "Q?", "facts": "F"}')[1].startswith("field 'facts'")
    row, _ = parse_question('{"question": " Q? ", "answers": ["A", "A ", "B"]}')
    assert row == {"id": "", "question": "Q?", "answers": ["A", "B"], "facts": []}


def test_shipped_sets_load_and_cover_every_kind_type_and_intensity():
    rows, errors = read_pairs(str(REPO / "examples/conflicts/pairs.jsonl"))
    assert not errors and len(rows) >= 30
    assert {r["kind"] for r in rows} == {"answer", "lexical", "factoid"}
    assert {r["type"] for r in rows} - {None} == set(TYPES)
    assert {r["conflict"] for r in rows} == {True, False}
    assert {"negated:1", "negated:3", "shared:0", "shared:2"} <= {r["intensity"] for r in rows}
    questions, errors = read_questions(str(REPO / "examples/conflicts/questions.jsonl"))
    assert not errors and {bool(json.loads(q["answers"])) for q in questions} == {True, False}
    assert any(json.loads(q["facts"]) for q in questions)
