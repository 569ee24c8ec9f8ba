"""One NLI model per evaluator replica: the RAGChecker NLI checker and the /v1/conflicts detector run on the copy
loaded first (serve/evaluator.py hands both its `classifier()`), and give the labels and pairs that checkers
with their own copies give (no Ray)."""

import asyncio

from rayflow.eval.conflicts import (
    ConflictService,
    ConflictsRequest,
    DetectorConfig,
    PairClassifier,
    build_detector,
    detect_conflicts,
)
from rayflow.eval.ragchecker.checking import CheckingConfig, NLIChecker


def test_checker_and_conflict_service_share_one_loaded_classifier():
    clf = PairClassifier("tiny", device="cpu")
    loads = []
    service = ConflictService("tiny", lambda: loads.append(1) or clf)
    checker = NLIChecker("tiny", CheckingConfig(), loaded=clf)
    assert checker.model is clf.model and checker.tokenizer is clf.tokenizer
    assert service.detector().clf is clf and service.detector().clf is clf and loads == [1]

    own = NLIChecker("tiny", CheckingConfig())
    assert own.model is not clf.model
    pairs = [(["the museum is in Plymouth", "it reopened"], "The museum reopened in Portsmouth.")]
    assert asyncio.run(checker.check(pairs)) == asyncio.run(own.check(pairs))
    request = ConflictsRequest(evidence=["It opened in 1990.", "It opened in 1991.", "It is in Leeds."])
    alone = build_detector(DetectorConfig(kind="nli", model="tiny", device="cpu"))
    assert asyncio.run(service.reply(request)) == detect_conflicts(request, alone)

