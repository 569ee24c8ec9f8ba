"""Conflict detectors: given two evidence texts (and the question), do they conflict, and how strongly?

    det = build_detector(DetectorConfig(kind="nli", model="tiny"))
    det.detect([("E1 ...", "E2 ...", "question?")])   # [Detection(conflict=..., score=...)] or PromptRejected

Three kinds, as in ECon (§4 of the RAG brief):

* `nli`: any Hugging Face NLI sequence classifier, premise = text a, hypothesis = text b; a conflict when
  P(contradiction) > P(entailment). score = P(contradiction).
* `consistency`: a factual-consistency scorer on any HF sequence-classification id: the consistency of b
  given a is P(`consistent_label`), else P(entailment) for an NLI head, else P(second label) for a 2-label
  head (MiniCheck-style), else the sigmoid of a single logit; a conflict when it is below `threshold`.
  score = 1 - consistency.
* `llm`: a yes/no question to a language model through the engine layer (`rayflow.llm`); the answer is read
  from the log-probs of the completions "Yes" and "No" (both scored, so every model, even a random one,
  gives an answer): P(yes) = softmax of the two; a conflict when P(yes) > `threshold`. score = P(yes).

Every detector's `score` is a conflict score in [0, 1]: higher means more conflicting.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rayflow.config import Config
from rayflow.eval.conflicts.classifier import TINY_NLI, PairClassifier
from rayflow.eval.conflicts.prompts import NO, YES, conflict_prompt
from rayflow.llm import Engine, EngineConfig, PromptRejected

PairInput = tuple[str, str, str | None]
"""(text a, text b, question or None)."""


class DetectorConfig(Config):
    """One conflict detector."""

    kind: Literal["nli", "consistency", "llm"] = Field("nli", description="nli, consistency or llm")
    name: str | None = Field(None, description="name in reports and columns; None = kind")
    model: str = Field(TINY_NLI, description="nli/consistency: HF sequence-classification id or directory")
    threshold: float = Field(
        0.5, ge=0, le=1, description="consistency: conflict below it; llm: conflict when P(yes) above it"
    )
    consistent_label: str | None = Field(
        None, description="consistency: the label meaning 'consistent'; None = entailment, or a 2-label head's second"
    )
    batch_size: int = Field(16, ge=1, description="nli/consistency: pairs per forward pass")
    max_length: int = Field(512, ge=8, description="nli/consistency: tokens per pair (longer pairs are truncated)")
    device: str = Field("auto", description="nli/consistency: cpu, cuda or auto")
    engine: EngineConfig = Field(
        EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024),
        description="llm: the model asked",
    )

    @property
    def label(self) -> str:
        """The detector's name in reports, columns and API replies."""
        return self.name or self.kind


@dataclass(frozen=True)
class Detection:
    """A detector's verdict on one pair; `score` is in [0, 1], higher = more conflicting."""

    conflict: bool
    score: float


class NLIDetector:
    """Conflict when the NLI head's P(contradiction) exceeds its P(entailment)."""

    def __init__(self, cfg: DetectorConfig, clf: PairClassifier | None = None):
        """`clf`: a classifier already holding `cfg.model` (shared, not loaded again); None = load it."""
        self.cfg = cfg
        self.clf = clf or PairClassifier(
            cfg.model, device=cfg.device, batch_size=cfg.batch_size, max_length=cfg.max_length
        )
        self.entail, self.contra = self.clf.label_index("entail"), self.clf.label_index("contra")
        if self.entail is None or self.contra is None:
            raise ValueError(
                f"detector {cfg.label!r}: model {cfg.model!r} has labels {self.clf.labels}; an NLI detector "
                "needs an entailment and a contradiction label"
            )

    def detect(self, pairs: Sequence[PairInput]) -> list[Detection | PromptRejected]:
        out: list[Detection | PromptRejected] = []
        for probs in self.clf.probs([a for a, _, _ in pairs], [b for _, b, _ in pairs]):
            p_contra, p_entail = probs[self.clf.labels[self.contra]], probs[self.clf.labels[self.entail]]
            out.append(Detection(conflict=p_contra > p_entail, score=p_contra))
        return out


class ConsistencyDetector:
    """Conflict when the consistency of b given a is below the threshold."""

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.clf = PairClassifier(cfg.model, device=cfg.device, batch_size=cfg.batch_size, max_length=cfg.max_length)
        labels = self.clf.labels
        if cfg.consistent_label is not None:
            if cfg.consistent_label.lower() not in labels:
                raise ValueError(
                    f"detector {cfg.label!r}: consistent_label {cfg.consistent_label!r} is not one of "
                    f"model {cfg.model!r}'s labels {labels}"
                )
            self.consistent = cfg.consistent_label.lower()
        elif self.clf.label_index("entail") is not None:
            self.consistent = labels[self.clf.label_index("entail")]
        else:  # a 2-label head is (unsupported, supported); a 1-logit head scores consistency itself
            self.consistent = labels[-1]

    def detect(self, pairs: Sequence[PairInput]) -> list[Detection | PromptRejected]:
        out: list[Detection | PromptRejected] = []
        for probs in self.clf.probs([a for a, _, _ in pairs], [b for _, b, _ in pairs]):
            consistency = probs[self.consistent]
            out.append(Detection(conflict=consistency < self.cfg.threshold, score=1.0 - consistency))
        return out


class LLMDetector:
    """A yes/no question to a language model, answered by scoring "Yes" and "No"."""

    def __init__(self, cfg: DetectorConfig, engine: Engine):
        self.cfg = cfg
        self.engine = engine

    @staticmethod
    def scoring_pairs(pair: PairInput) -> list[tuple[list, str]]:
        """The two (prompt, completion) pairs whose log-probs answer one pair: "Yes", then "No"."""
        prompt = conflict_prompt(pair[0], pair[1], pair[2])
        return [(prompt, YES), (prompt, NO)]

    def decide(self, yes_logprob: float, no_logprob: float) -> Detection:
        """P(yes) from the completions' total log-probs (nats), and the verdict at the threshold."""
        top = max(yes_logprob, no_logprob)
        p_yes = math.exp(yes_logprob - top) / (math.exp(yes_logprob - top) + math.exp(no_logprob - top))
        return Detection(conflict=p_yes > self.cfg.threshold, score=p_yes)

    def detect(self, pairs: Sequence[PairInput]) -> list[Detection | PromptRejected]:
        flat = [sp for pair in pairs for sp in self.scoring_pairs(pair)]
        scored = self.engine.score([p for p, _ in flat], [c for _, c in flat]) if flat else []
        out: list[Detection | PromptRejected] = []
        for yes, no in zip(scored[::2], scored[1::2]):
            rejected = next((s for s in (yes, no) if isinstance(s, PromptRejected)), None)
            out.append(rejected or self.decide(sum(yes.logprobs), sum(no.logprobs)))
        return out


Detector = NLIDetector | ConsistencyDetector | LLMDetector


def build_detector(cfg: DetectorConfig, engine: Engine | None = None) -> Detector:
    """The detector `cfg` describes; an `llm` detector asks `engine` (built from `cfg.engine` when None)."""
    if cfg.kind == "nli":
        return NLIDetector(cfg)
    if cfg.kind == "consistency":
        return ConsistencyDetector(cfg)
    if engine is None:
        from rayflow.llm import build_engine

        engine = build_engine(cfg.engine)
    return LLMDetector(cfg, engine)


# -- the /v1/conflicts route ------------------------------------------------------------------------------

MAX_EVIDENCE = 32
MAX_TEXT_CHARS = 20_000


class ConflictsRequest(BaseModel):
    """`POST /v1/conflicts`: every two of the evidence texts are checked, i < j."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    evidence: list[str] = Field(min_length=2, max_length=MAX_EVIDENCE)


def detect_conflicts(request: ConflictsRequest, detector: Detector) -> dict:
    """`{pairs: [{i, j, conflict, score, detector}]}` for every two texts of the request, i < j; a pair the
    detector's engine refuses has `conflict` and `score` null and an `error`. Raises ValueError naming
    `evidence[k]` when a text is empty or longer than `MAX_TEXT_CHARS`."""
    for k, text in enumerate(request.evidence):
        if not text.strip():
            raise ValueError(f"evidence[{k}]: empty text")
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"evidence[{k}]: {len(text)} characters, more than {MAX_TEXT_CHARS}")
    index = list(combinations(range(len(request.evidence)), 2))
    found = detector.detect([(request.evidence[i], request.evidence[j], request.question) for i, j in index])
    name = detector.cfg.label
    pairs = []
    for (i, j), d in zip(index, found):
        if isinstance(d, PromptRejected):
            pairs.append({"i": i, "j": j, "conflict": None, "score": None, "detector": name, "error": d.reason})
        else:
            pairs.append({"i": i, "j": j, "conflict": d.conflict, "score": round(d.score, 6), "detector": name})
    return {"pairs": pairs}


class ConflictService:
    """The `/v1/conflicts` route's state in a Serve replica: an NLI detector on `model` (a Serve app's NLI
    classifier), loaded on the first request, run off the event loop. `model` None: the route answers that
    the service has no detector. `classifier`: where the replica's one copy of the model comes from (a
    function returning a `PairClassifier`, called on the first request), so that its other routes share it;
    None = load one here. (The LLM detector needs `Engine.score`, which the generic LLM deployment does not
    serve, so the service detects with NLI only.)"""

    def __init__(self, model: str | None, classifier: Callable[[], PairClassifier] | None = None):
        self.model = model
        self.classifier = classifier
        self._detector: Detector | None = None
        self._lock = threading.Lock()

    def detector(self) -> Detector:
        """The NLI detector, built on first use."""
        with self._lock:
            if self._detector is None:
                clf = self.classifier() if self.classifier is not None else None
                self._detector = NLIDetector(DetectorConfig(kind="nli", model=self.model), clf)
            return self._detector

    def _detect(self, request: ConflictsRequest) -> dict:
        detector = self.detector()
        with self._lock:  # one forward pass at a time on the replica's model
            return detect_conflicts(request, detector)

    async def reply(self, request: ConflictsRequest) -> dict:
        """`detect_conflicts` for one request; ValueError (its message starting with the field) for a bad one."""
        if self.model is None:
            raise ValueError("detector: this service has no NLI model (set nli_model in its args)")
        return await asyncio.to_thread(self._detect, request)
