"""The three conflict detectors on tiny models built here (no Ray): their decision rules against the model's own
probabilities, batching, per-pair refusals, and the `/v1/conflicts` logic."""

import pytest
from pydantic import ValidationError

from rayflow.eval.conflicts.detectors import (
    ConflictsRequest,
    Detection,
    DetectorConfig,
    LLMDetector,
    build_detector,
    detect_conflicts,
)
from rayflow.llm import EngineConfig, PromptRejected, Scored, build_engine

PAIRS = [
    ("The museum is in Portsmouth.", "The museum is in Plymouth.", "Where is the museum?"),
    ("The viaduct has twelve arches and crosses a wide valley below the village.", "It has nine.", None),
    ("It opened in 1887.", "Since it opened in 1902, the observatory has trained astronomers.", "When?"),
]


@pytest.fixture(scope="module")
def nli():
    return build_detector(DetectorConfig(kind="nli"))


def test_nli_conflict_is_contradiction_over_entailment_and_batching_changes_nothing(nli):
    assert nli.clf.labels == ["entailment", "neutral", "contradiction"]  # the tiny classifier's
    probs = [nli.clf.probs([a], [b])[0] for a, b, _ in PAIRS]  # one pair per forward: no padding
    found = nli.detect(PAIRS)  # one padded batch
    for p, d in zip(probs, found):
        assert d.score == pytest.approx(p["contradiction"], abs=1e-5)
        assert d.conflict == (p["contradiction"] > p["entailment"])
        assert sum(p.values()) == pytest.approx(1.0)
    # The rule really decides both ways somewhere: a pair's direction changes the random head's output.
    swapped = nli.detect([(b, a, q) for a, b, q in PAIRS])
    assert [d.score for d in swapped] != [d.score for d in found]


def test_consistency_threshold_and_label(nli):
    p_entail = [nli.clf.probs([a], [b])[0]["entailment"] for a, b, _ in PAIRS]
    never = build_detector(DetectorConfig(kind="consistency", threshold=0.0)).detect(PAIRS)
    always = build_detector(DetectorConfig(kind="consistency", threshold=1.0)).detect(PAIRS)
    assert not any(d.conflict for d in never) and all(d.conflict for d in always)
    assert [d.score for d in never] == pytest.approx([1 - p for p in p_entail], abs=1e-5)
    low, high = sorted(p_entail)[1:]
    mid = (low + high) / 2  # conflicts are exactly the pairs less consistent than the threshold
    at_mid = build_detector(DetectorConfig(kind="consistency", threshold=mid)).detect(PAIRS)
    assert [d.conflict for d in at_mid] == [p < mid for p in p_entail]
    with pytest.raises(ValueError, match="consistent_label 'supported'"):
        build_detector(DetectorConfig(kind="consistency", consistent_label="supported"))


def test_llm_detector_reads_yes_against_no_from_the_engine():
    engine = build_engine(EngineConfig(backend="hf", model="tiny:tiny", dtype="float32"))
    det = build_detector(DetectorConfig(kind="llm"), engine)
    found = det.detect(PAIRS)
    for pair, d in zip(PAIRS, found):
        (prompt, yes), (_, no) = LLMDetector.scoring_pairs(pair)
        lp_yes, lp_no = (sum(s.logprobs) for s in engine.score([prompt, prompt], [yes, no]))
        assert d.score == pytest.approx(1 / (1 + pow(2.718281828459045, lp_no - lp_yes)), rel=1e-4)
        assert d.conflict == (d.score > 0.5)
    assert det.decide(-1.0, -1.0) == Detection(conflict=False, score=0.5)  # a tie is not a conflict
    assert det.decide(-0.1, -5.0).conflict and not det.decide(-5.0, -0.1).conflict


class RefusingEngine:
    """Scripted engine: refuses any prompt mentioning REFUSE, scores the rest with fixed log-probs."""

    def score(self, prompts, completions):
        return [PromptRejected(reason="too long") if "REFUSE" in str(p)
                else Scored(prompt_len=1, token_ids=[1], logprobs=[-0.1 if c == "Yes" else -2.0])
                for p, c in zip(prompts, completions)]  # fmt: skip


def test_detect_conflicts_covers_every_pair_once_and_a_refusal_costs_only_its_pair(nli):
    request = ConflictsRequest(question="Q?", evidence=["one", "two REFUSE", "three"])
    det = build_detector(DetectorConfig(kind="llm", name="judge"), RefusingEngine())
    reply = detect_conflicts(request, det)["pairs"]
    assert [(p["i"], p["j"]) for p in reply] == [(0, 1), (0, 2), (1, 2)]
    assert [p.get("error") for p in reply] == ["too long", None, "too long"]
    assert reply[1]["conflict"] is True and reply[1]["detector"] == "judge" and reply[0]["score"] is None
    nli_reply = detect_conflicts(ConflictsRequest(evidence=[a for a, _, _ in PAIRS]), nli)["pairs"]
    assert len(nli_reply) == 3 and all(isinstance(p["conflict"], bool) for p in nli_reply)
    with pytest.raises(ValueError, match=r"evidence\[1\]: empty"):
        detect_conflicts(ConflictsRequest(evidence=["x", "  "]), nli)
    with pytest.raises(ValidationError):
        ConflictsRequest(evidence=["only one"])
