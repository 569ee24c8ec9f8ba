"""RAGChecker's metrics from labels: the spec's worked example, the invariants, the empty-set edge cases."""

import copy
import json
import math
import random

import pytest

from rayflow.eval.ragchecker import ALL_METRICS, LABEL_FIELDS, compute_metrics, item_metrics
from tests.conftest import REPO

E, N, C = "Entailment", "Neutral", "Contradiction"


def query(m_ok, m_wrong, g, chunks, a2r=None, r2a=None, ret2resp=None, ret2ans=None):
    """Labels for one query from sparse facts: all-Neutral grids with the listed (claim, chunk) Entailments."""
    m = m_ok + m_wrong
    return {
        "answer2response": a2r or [E] * m_ok + [C, N] * (m_wrong // 2) + [C] * (m_wrong % 2),
        "response2answer": r2a,
        "retrieved2response": [[E if (i, j) in ret2resp else N for j in range(chunks)] for i in range(m)],
        "retrieved2answer": [[E if (i, j) in ret2ans else N for j in range(chunks)] for i in range(g)],
    }


# The spec's worked example (rag.md section 4), rebuilt from its fractions with labels of our own: Q0 has 11
# response claims (8 right), 22 ground-truth claims and 4 chunks; Q1 5 (4 right), 8 and 3.
Q0 = query(
    8, 3, 22, 4,
    r2a=[E] * 11 + [N, C] * 5 + [N],
    # gt claims 0-4 are in chunks 0-2 (chunk 3 is irrelevant): CR 5/22, CP 3/4; all five used: CU 1.
    ret2ans={(0, 0), (1, 1), (2, 2), (3, 0), (4, 1)},
    # response: right claim 0 in chunk 2, right claim 1 only in irrelevant chunk 3 (no noise: it is right),
    # wrong claims 8 and 9 in relevant chunks 0 and 1 (NS_relevant 2/11), wrong claim 10 nowhere (hallucination
    # 1/11), right claims 2-7 nowhere (self-knowledge 6/11): faithfulness 4/11.
    ret2resp={(0, 2), (1, 3), (8, 0), (9, 1)},
)  # fmt: skip
Q1 = query(
    4, 1, 8, 3,
    r2a=[E] * 6 + [C, N],
    ret2ans={(i, i % 3) for i in range(8)},  # every gt claim in some chunk, every chunk relevant
    ret2resp={(0, 0), (1, 1), (2, 2), (3, 0), (4, 1)},  # all faithful; wrong claim 4 in relevant chunk 1
)  # fmt: skip
GOLDEN = {
    "overall_metrics": {"precision": 76.4, "recall": 62.5, "f1": 68.3},
    "retriever_metrics": {"claim_recall": 61.4, "context_precision": 87.5},
    "generator_metrics": {
        "context_utilization": 87.5,
        "noise_sensitivity_in_relevant": 19.1,
        "noise_sensitivity_in_irrelevant": 0.0,
        "hallucination": 4.5,
        "self_knowledge": 27.3,
        "faithfulness": 68.2,
    },
}


def test_worked_example_reproduces_the_spec_numbers():
    assert compute_metrics([Q0, Q1]) == GOLDEN
    per_query = item_metrics(Q0)
    expected = {"precision": 8 / 11, "recall": 0.5, "claim_recall": 5 / 22, "context_precision": 0.75,
                "context_utilization": 1.0, "noise_sensitivity_in_relevant": 2 / 11,
                "noise_sensitivity_in_irrelevant": 0.0, "hallucination": 1 / 11, "self_knowledge": 6 / 11,
                "faithfulness": 4 / 11}  # fmt: skip
    assert per_query == pytest.approx({**expected, "f1": 2 * (8 / 11) * 0.5 / (8 / 11 + 0.5)})
    assert item_metrics(Q1)["context_utilization"] == 0.75
    # f1 is averaged per query, not the harmonic mean of the averaged precision and recall (69.0).
    assert GOLDEN["overall_metrics"]["f1"] != round(2 * 76.4 * 62.5 / (76.4 + 62.5), 1)


def random_query(rng):
    m, g, k = rng.randint(1, 7), rng.randint(1, 7), rng.randint(1, 5)
    pick = lambda: rng.choice([E, E, N, C])
    return {
        "answer2response": [pick() for _ in range(m)],
        "response2answer": [pick() for _ in range(g)],
        "retrieved2response": [[rng.choice([E, N, N, C]) for _ in range(k)] for _ in range(m)],
        "retrieved2answer": [[rng.choice([E, N, N, C]) for _ in range(k)] for _ in range(g)],
    }


def test_invariants_per_query_with_claims_chunks_and_ground_truth():
    rng = random.Random(0)
    for _ in range(300):
        x = item_metrics(random_query(rng))
        assert x["faithfulness"] + x["hallucination"] + x["self_knowledge"] == pytest.approx(1.0)
        assert x["noise_sensitivity_in_relevant"] + x["noise_sensitivity_in_irrelevant"] + x[
            "hallucination"
        ] == pytest.approx(1.0 - x["precision"])
        assert all(0.0 <= v <= 1.0 for v in x.values())


def test_empty_sets_are_zero_never_nan():
    no_chunks = {"answer2response": [E, N], "response2answer": [E, E, C],
                 "retrieved2response": [[], []], "retrieved2answer": [[], [], []]}  # fmt: skip
    x = item_metrics(no_chunks)
    assert x["precision"] == 0.5 and x["recall"] == pytest.approx(2 / 3) and x["f1"] > 0
    assert all(x[m] == 0.0 for m in ALL_METRICS if m not in ("precision", "recall", "f1"))
    # No ground-truth claims: recall, the retriever metrics, CU and both noise sensitivities are 0, while the
    # response-side metrics still count (a chunk entails response claim 0).
    no_gt = {"answer2response": [N, N], "response2answer": [],
             "retrieved2response": [[E, N], [N, N]], "retrieved2answer": []}  # fmt: skip
    x = item_metrics(no_gt)
    assert x["recall"] == x["f1"] == x["claim_recall"] == x["context_precision"] == 0.0
    assert x["noise_sensitivity_in_relevant"] == x["noise_sensitivity_in_irrelevant"] == 0.0
    assert x["faithfulness"] == 0.5 and x["hallucination"] == 0.5
    # No response claims: everything over response claims is 0; the ground-truth side still counts.
    no_resp = {"answer2response": [], "response2answer": [N],
               "retrieved2response": [], "retrieved2answer": [[E, N]]}  # fmt: skip
    x = item_metrics(no_resp)
    assert x["claim_recall"] == 1.0 and x["context_precision"] == 0.5 and x["context_utilization"] == 0.0
    assert all(x[m] == 0.0 for m in ("precision", "f1", "faithfulness", "hallucination", "self_knowledge"))
    # A chunk-utilisation denominator of 0 (no gt claim in any chunk) is 0 too.
    assert item_metrics({**no_resp, "retrieved2answer": [[N, C]]})["context_utilization"] == 0.0
    grouped = compute_metrics([no_chunks, no_gt, no_resp])
    assert not any(math.isnan(v) for g in grouped.values() for v in g.values())
    assert compute_metrics([]) == {g: {m: 0.0 for m in ms} for g, ms in GOLDEN.items()}


def test_input_untouched_missing_labels_named_and_metric_subsets():
    results = [copy.deepcopy(Q0), copy.deepcopy(Q1)]
    compute_metrics(results)
    assert results == [Q0, Q1]
    broken = {k: v for k, v in Q1.items() if k != "retrieved2answer"}
    with pytest.raises(ValueError, match=r"results\[1\]\.retrieved2answer: missing"):
        compute_metrics([Q0, broken])
    # Precision and recall need only the two answer-level label fields.
    assert compute_metrics([broken], "overall_metrics") == {
        "overall_metrics": {"precision": 80.0, "recall": 75.0, "f1": 77.4},
        "retriever_metrics": {},
        "generator_metrics": {},
    }
    with pytest.raises(ValueError, match="metrics: unknown metric 'accuracy'"):
        compute_metrics([Q0], ["accuracy"])


def test_shipped_labelled_sample():
    results = json.loads((REPO / "examples/ragchecker/labelled.json").read_text())["results"]
    assert all(all(r.get(f) is not None for f in LABEL_FIELDS) for r in results)
    x = item_metrics(results[0])  # q1: the 300 m claim is wrong and unsupported, "iron" is noise
    assert x["hallucination"] == x["noise_sensitivity_in_irrelevant"] == pytest.approx(1 / 3)
    assert compute_metrics(results)["overall_metrics"] == {"precision": 33.3, "recall": 33.3, "f1": 33.3}
