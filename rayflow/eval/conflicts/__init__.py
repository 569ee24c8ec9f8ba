"""ECon on rayflow: evidence-conflict sets (answer, lexically similar, factoid of graded intensity) and the
detectors that find conflicts (NLI, factual consistency, an LLM's yes/no), with their metrics.

Modules: `pairs` (the conflict-set record, conflict types, assembling sets), `prompts` (the generator's and
the LLM detector's prompts and parsers), `classifier` (sentence-pair classifiers on any HF
sequence-classification id, `tiny` offline), `detectors` (the three detectors and the
`/v1/conflicts` logic), `metrics` (per-class, per-type, per-intensity scores and the plot), `make` and
`evaluate` (the two Ray Data workflows behind `jobs/make_conflicts.py` and `jobs/eval_conflicts.py`).
See docs/conflicts.md.
"""

from rayflow.eval.conflicts.classifier import PairClassifier
from rayflow.eval.conflicts.detectors import (
    ConflictService,
    ConflictsRequest,
    Detection,
    DetectorConfig,
    build_detector,
    detect_conflicts,
)
from rayflow.eval.conflicts.metrics import detector_metrics
from rayflow.eval.conflicts.pairs import ConflictPair, conflict_type

__all__ = [
    "ConflictPair",
    "ConflictService",
    "ConflictsRequest",
    "Detection",
    "DetectorConfig",
    "PairClassifier",
    "build_detector",
    "conflict_type",
    "detect_conflicts",
    "detector_metrics",
]
