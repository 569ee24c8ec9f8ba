"""Claim extraction and checking logic without Ray: prompt parsers, merge precedence, joint vs single checking
with a deterministic (scripted) checker, the label cache, refusals, item validation, the tiny NLI checker."""

import asyncio
import json
import re

import pytest

from rayflow.eval.ragchecker import LABEL_FIELDS, select_metrics
from rayflow.eval.ragchecker.checking import (
    CheckingConfig,
    LabelCache,
    LLMChecker,
    LLMExtractor,
    NLIChecker,
    RAGEvaluator,
    nli_label,
    segments,
)
from rayflow.eval.ragchecker.items import check_item, read_items
from rayflow.eval.ragchecker.prompts import merge_labels, parse_joint_labels, parse_label, parse_triplets
from rayflow.llm import Generation, PromptRejected
from tests.conftest import REPO

E, N, C = "Entailment", "Neutral", "Contradiction"
ALL = select_metrics("all_metrics")


def test_parsers():
    out = 'Triplets:\n(Eiffel Tower, was completed in, 1889)\n("Bees", gather, nectar, pollen)\n(Eiffel Tower, was completed in, 1889)'
    assert parse_triplets(out) == [
        ["Eiffel Tower", "was completed in", "1889"],
        ["Bees", "gather", "nectar, pollen"],
    ]
    assert parse_triplets("Abstain") == [] and parse_triplets("(only, two)") == []
    assert parse_label("  contradiction.") == C and parse_label("The claim is entailed.") == E
    assert parse_label("no idea") == N
    # Joint: numbered lines in any order; a missing or unreadable one is Neutral; unnumbered fill in order.
    assert parse_joint_labels("2. Contradiction\n1) Entailment\n4. maybe", 4) == [E, C, N, N]
    assert parse_joint_labels("Entailment\nNeutral", 3) == [E, N, N]
    assert parse_joint_labels("", 2) == [N, N]


def test_merge_precedence_over_segments():
    assert merge_labels([N, C, E]) == E
    assert merge_labels([N, C, N]) == C
    assert merge_labels([N, N]) == N and merge_labels([]) == N
    text = "First sentence here. Second one is longer than that. Third."
    assert segments(text, 0) == [text]
    assert segments(text, 30) == ["First sentence here.", "Second one is longer than that.", "Third."]


def _claims_in(prompt: str) -> tuple[str, list[str]]:
    reference = re.search(r"Reference: (.*?)\n\n", prompt, re.DOTALL).group(1)
    if "Claims:\n" in prompt:
        block = prompt.split("Claims:\n", 1)[1].split("\n\nAnswers:", 1)[0]
        return reference, [line.split(". ", 1)[1] for line in block.splitlines()]
    return reference, [re.search(r"Claim: (.*?)\n\n", prompt, re.DOTALL).group(1)]


def _verdict(claim: str, reference: str) -> str:
    """Deterministic checker: every word of the object in the reference -> Entailment; 'not' in the
    reference beside the subject -> Contradiction; else Neutral."""
    subject, _, obj = [p.strip() for p in claim.strip("()").split(", ", 2)]
    ref = reference.lower()
    if all(w in ref for w in obj.lower().split()):
        return E
    return C if f"{subject.lower()} is not" in ref else N


class Scripted:
    """A fake engine for parsing logic: answers check prompts with `_verdict`, extraction prompts with a fixed
    triplet per sentence; counts prompts; refuses prompts containing REFUSE."""

    def __init__(self):
        self.prompts = 0

    async def __call__(self, prompts, params):
        out = []
        for messages in prompts:
            self.prompts += 1
            text = messages[0]["content"]
            if "REFUSE" in text:
                out.append(PromptRejected("prompt is longer than the context"))
            elif text.startswith("You read a text"):
                body = text.split("Text: ", 1)[1].split("\n\nTriplets:")[0]
                trips = [f"(it, says, {s.strip(' .')})" for s in body.split(".") if s.strip()]
                out.append(Generation("\n".join(trips) or "Abstain", [], "stop"))
            else:
                reference, claims = _claims_in(text)
                labels = [_verdict(c, reference) for c in claims]
                joint = "Claims:\n" in text
                answer = "\n".join(f"{i}. {lab}" for i, lab in enumerate(labels, 1)) if joint else labels[0]
                out.append(Generation(answer, [], "stop"))
        return out


def labelled_items():
    return json.loads((REPO / "examples/ragchecker/labelled.json").read_text())["results"]


def unlabelled(items):
    return [{k: v for k, v in item.items() if k not in LABEL_FIELDS} for item in items]


def evaluate(items, cfg, cache=None, engine=None):
    engine = engine or Scripted()
    evaluator = RAGEvaluator(
        LLMExtractor(engine, "scripted", cfg, cache), LLMChecker(engine, "scripted", cfg, cache), cfg
    )
    return asyncio.run(evaluator.evaluate(items, ALL)), engine


def test_joint_and_single_checking_agree_with_a_deterministic_checker(tmp_path):
    items = unlabelled(labelled_items())
    joint, j = evaluate(items, CheckingConfig(joint_check=True, joint_check_num=5))
    single, s = evaluate(items, CheckingConfig(joint_check=False))
    for a, b in zip(joint, single):
        assert all(a[f] == b[f] for f in LABEL_FIELDS) and a["metrics"] == b["metrics"]
    assert j.prompts < s.prompts  # up to 5 claims per prompt
    # The scripted verdicts are real labels: q1's "1889" is entailed by the first chunk only.
    assert joint[0]["retrieved2response"][0] == [E, N, N]
    assert "error" not in joint[0] and items[0].get("answer2response") is None  # inputs are copied
    # Equal items (a repeated question, raw) are each extracted and checked.
    raw = {k: v for k, v in items[1].items() if not k.endswith("_claims")}
    twice, _ = evaluate([raw, dict(raw)], CheckingConfig())
    assert twice[0]["response_claims"] == twice[1]["response_claims"] != []
    assert twice[0]["metrics"] == twice[1]["metrics"]


def test_label_cache_skips_what_is_labelled_and_claims_present_are_kept(tmp_path):
    cfg = CheckingConfig(joint_check=False)
    items = unlabelled(labelled_items())
    items[2] = {k: v for k, v in items[2].items() if not k.endswith("_claims")}  # q3 needs extraction
    first, engine = evaluate(items, cfg, LabelCache(tmp_path))
    assert engine.prompts > 0 and first[2]["response_claims"][0][0] == "it"
    assert first[0]["response_claims"] == labelled_items()[0]["response_claims"]  # not re-extracted
    again, engine = evaluate(items, cfg, LabelCache(tmp_path))  # a rerun: a new process reads the shards
    assert engine.prompts == 0
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]
    # Labels present in the input are not recomputed (RAGChecker's skip), even without a cache.
    given = labelled_items()
    kept, engine = evaluate(given, cfg)
    assert engine.prompts == 0 and [k["answer2response"] for k in kept] == [
        g["answer2response"] for g in given
    ]


def test_a_refused_prompt_fails_only_its_item():
    items = unlabelled(labelled_items())
    items[1]["retrieved_context"][0]["text"] += " REFUSE"
    done, _ = evaluate(items, CheckingConfig())
    assert "refused" in done[1]["error"] and "metrics" not in done[1]
    assert all("error" not in d and "metrics" in d for i, d in enumerate(done) if i != 1)


def test_long_references_are_checked_in_segments_and_merged():
    item = {"query": "q", "response": "r", "gt_answer": "Filler words come first. The tower is 330 metres tall.",
            "response_claims": [["tower", "height", "330 metres"]], "gt_answer_claims": [],
            "retrieved_context": []}  # fmt: skip
    metrics = select_metrics("precision")
    whole = CheckingConfig(joint_check=False, max_reference_chars=0)
    split = CheckingConfig(joint_check=False, max_reference_chars=30)
    for cfg in (whole, split):
        engine = Scripted()
        done = asyncio.run(RAGEvaluator(None, LLMChecker(engine, "s", cfg), cfg).evaluate([item], metrics))
        assert done[0]["answer2response"] == [E]
    assert engine.prompts == 2  # one per segment, merged: Entailment wins over the first segment's Neutral


def test_item_validation_names_the_field():
    ok = labelled_items()[0]
    assert check_item(ok, ALL, "x")[0]["query_id"] == "q1"
    bad = [
        ({**ok, "query": 3}, "query: must be a string"),
        ({k: v for k, v in ok.items() if k != "gt_answer"} | {"answer2response": None}, "gt_answer: missing"),
        ({**ok, "retrieved_context": [{"doc_id": "a"}]}, "retrieved_context[0].text"),
        ({**ok, "answer2response": ["Yes", E, E]}, "answer2response: label 'Yes'"),
        ({**ok, "retrieved2answer": [[E], [E], [E]]}, "retrieved2answer: 1 labels"),
    ]
    for obj, reason in bad:
        item, got = check_item(obj, ALL, "x")
        assert item is None and got.startswith(reason), got
    # A /v1/query answer without a ground truth is fine for faithfulness alone.
    answer = {
        "query": "q",
        "response": "r",
        "retrieved_context": [{"doc_id": "d", "text": "t"}],
        "citations": [],
    }
    assert check_item(answer, select_metrics("faithfulness"), "x")[1] is None
    items, errors = read_items(str(REPO / "examples/ragchecker/inputs.jsonl"), ALL)
    assert [i["query_id"] for i in items] == ["q1", "q2", "q3", "q4"]
    assert errors[0]["where"] == "inputs.jsonl:5" and errors[0]["reason"].startswith("gt_answer: missing")


def test_nli_checker_on_a_tiny_local_classifier(tmp_path):
    checker = NLIChecker("tiny", CheckingConfig(batch_size_checker=3), LabelCache(tmp_path))
    pairs = [
        ([["a", "b", "c"], ["x", "y", "z"]], "some reference"),
        ([], "other"),
        ([["p", "q", "r"]], "ref"),
    ]
    labels = asyncio.run(checker.check(pairs))
    assert [len(x) for x in labels] == [2, 0, 1] and all(lab in (E, N, C) for row in labels for lab in row)
    assert asyncio.run(checker.check(pairs)) == labels and checker.cache.hits == 3
    assert nli_label("ENTAILMENT") == E and nli_label("contradiction") == C
    with pytest.raises(ValueError, match="checker_name: the classifier's label 'LABEL_0'"):
        nli_label("LABEL_0")
