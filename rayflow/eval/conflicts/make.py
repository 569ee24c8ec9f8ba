"""`make_conflicts`: questions in, ECon conflict sets out, on Ray Data through the one engine stage.

Input JSONL, one question per line: `{id?, question, answers?: [...], facts?: [...]}`. Per question, in one
pass of engine-stage actors (four fused tasks sharing one language model, plus the NLI validator):

1. `ProposeTask`: an LLM proposes `n_answers` plausible answers (skipped when the line gives `answers`, and
   for factoid-only lines, which give `facts`).
2. `WriteTask`: `n_evidence` web-style passages per answer, each in its own register, and one negation per
   fact.
3. `ReadTask`: the LLM answers the question from each passage (read-back); for every two answers (a, b), a
   minimal edit of a's first passage towards b: a whole-word substitution of a by b where a occurs in it,
   else an LLM rewrite.
4. `ValidateTask`: an NLI model (`validation.model`, any HF sequence classifier) keeps a passage when it
   entails "q? a" with P >= `min_entailment` and its read-back agrees with a (exact match, else NLI from
   "q? read-back" to "q? a" with P >= `min_agreement`); an edit when it entails "q? b"; a negation when it
   contradicts its fact with P >= `min_contradiction`.

The driver then assembles answer, lexical and factoid pairs (`rayflow.eval.conflicts.pairs`) from what
survived. Every line ends in `candidates.jsonl` (its answers, passages, read-backs, scores and pair count)
or in `errors/errors.parquet` (unreadable line, or a prompt the engine refused). Outputs in `output_dir`:
pairs.jsonl (the conflict set, `jobs/eval_conflicts.py`'s input), candidates.jsonl, errors/, report.md,
summary.json (counts per stage), run.json. Only `run` touches Ray.
"""

from __future__ import annotations

import json
import logging
from itertools import permutations
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import Field

from rayflow.config import Config
from rayflow.data.engine_stage import StageConfig, engine_map, generate_rows
from rayflow.eval.conflicts.classifier import TINY_NLI, PairClassifier
from rayflow.eval.conflicts.pairs import answer_pairs, factoid_pairs, minimal_edit
from rayflow.eval.conflicts.prompts import (
    EVIDENCE_STYLES,
    answers_prompt,
    edit_prompt,
    evidence_prompt,
    negation_prompt,
    normalize,
    parse_answers,
    parse_passage,
    parse_short,
    readback_prompt,
    statement,
)
from rayflow.jsonl import loads_object
from rayflow.llm import Engine, EngineConfig, PromptRejected, SamplingParams, resolve_model_path
from rayflow.workflow import Result, Workflow, require_model, require_path

log = logging.getLogger(__name__)


class ValidationConfig(Config):
    """The NLI validation of generated evidence, edits and negations."""

    model: str = Field(TINY_NLI, description="NLI model: HF sequence-classification id or directory")
    min_entailment: float = Field(0.5, ge=0, le=1, description="P(passage entails 'q? a') to keep a passage or edit")
    min_agreement: float = Field(
        0.5, ge=0, le=1, description="P('q? read-back' entails 'q? a') to keep a passage (1 on exact match)"
    )
    min_contradiction: float = Field(0.5, ge=0, le=1, description="P(fact contradicts negation) to keep a negation")
    batch_size: int = Field(16, ge=1, description="pairs per NLI forward pass")
    max_length: int = Field(512, ge=8, description="tokens per NLI pair")
    device: str = Field("auto", description="cpu, cuda or auto")


class MakeConflictsConfig(Config):
    """ECon conflict-set generation: questions in, typed evidence pairs out."""

    input: str = Field("examples/conflicts/questions.jsonl", description="JSONL file or directory of *.jsonl")
    output_dir: str = Field("outputs/make_conflicts", description="where pairs.jsonl, candidates, report go")
    n_answers: int = Field(3, ge=2, le=10, description="answers proposed per question without given answers")
    n_evidence: int = Field(
        2, ge=2, le=len(EVIDENCE_STYLES), description="passages written per answer (2: E1, E2 of a triple)"
    )
    lexical: bool = Field(True, description="also build minimal-edit (lexically similar) conflicts")
    engine: EngineConfig = Field(
        EngineConfig(backend="hf", model="tiny:tiny", dtype="float32", max_model_len=1024),
        description="the generating LLM",
    )
    sampling: SamplingParams = Field(SamplingParams(max_tokens=96), description="decoding of every generation")
    validation: ValidationConfig = ValidationConfig()
    stage: StageConfig = Field(StageConfig(batch_size=16), description="the generator actors")


# -- reading ----------------------------------------------------------------------------------------------


def parse_question(line: str) -> tuple[dict | None, str | None]:
    """One JSONL line -> `{id, question, answers, facts}` or the reason it is unusable (naming the field)."""
    obj, error = loads_object(line)
    if obj is None:
        return None, error
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        return None, "field 'question' must be a non-empty string" + (" (missing)" if "question" not in obj else "")
    for name in ("answers", "facts"):
        value = obj.get(name, [])
        if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
            return None, f"field {name!r} must be a list of non-empty strings"
    answers = list(dict.fromkeys(a.strip() for a in obj.get("answers", [])))
    if len(answers) == 1:
        return None, "field 'answers' needs at least 2 different answers (or none, to have them proposed)"
    return {"id": str(obj.get("id", "")), "question": question.strip(), "answers": answers,
            "facts": [f.strip() for f in obj.get("facts", [])]}, None  # fmt: skip


def read_questions(path: str) -> tuple[list[dict], list[dict]]:
    """Rows (every `ROW_SCHEMA` column set) and error records of a JSONL file or directory, in order."""
    source = Path(path)
    files = sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
    rows, errors = [], []
    for file in files:
        with file.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parsed, reason = parse_question(line)
                if parsed is None:
                    errors.append({"source": str(file), "line": number, "reason": reason, "raw": line[:500]})
                    continue
                rows.append({
                    "id": parsed["id"] or f"{file.stem}-{number}", "question": parsed["question"],
                    "source": str(file), "line": number, "answers": json.dumps(parsed["answers"]),
                    "proposed": False, "facts": json.dumps(parsed["facts"]), "evidence": "[]", "edits": "[]",
                    "negations": "[]", "error": None,
                })  # fmt: skip
    return rows, errors


ROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("question", pa.string()),
        ("source", pa.string()),
        ("line", pa.int64()),
        ("answers", pa.string()),  # JSON list of answers
        ("proposed", pa.bool_()),  # the answers were proposed by the LLM
        ("facts", pa.string()),  # JSON list of facts
        ("evidence", pa.string()),  # JSON list of {answer, style, text, readback, entail, agree, ..., valid}
        ("edits", pa.string()),  # JSON list of {a, b, text, how, entail, valid}
        ("negations", pa.string()),  # JSON list of {fact, text, contra, valid}
        ("error", pa.string()),
    ]
)


# -- the engine-stage tasks ---------------------------------------------------------------------------------


class _GenerateTask:
    """Shared by the three LLM steps: one engine call for the whole batch, per row a list of prompts."""

    schema = ROW_SCHEMA

    def __init__(self, cfg: MakeConflictsConfig):
        self.cfg = cfg
        self.engine = cfg.engine

    def prompts(self, row: dict[str, Any]) -> list:
        raise NotImplementedError

    def fill(self, row: dict[str, Any], texts: list[str]) -> None:
        raise NotImplementedError

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None:
        todo = [(row, self.prompts(row)) for row in rows if row["error"] is None]
        todo = [(row, prompts) for row, prompts in todo if prompts]
        results = generate_rows(engine, [p for _, p in todo], self.cfg.sampling)
        for (row, _), result in zip(todo, results):
            if isinstance(result, PromptRejected):
                row["error"] = f"{type(self).__name__}: the engine refused a prompt: {result.reason}"
            else:
                self.fill(row, [g.text for g in result])


class ProposeTask(_GenerateTask):
    """Candidate answers for questions that give neither answers nor facts."""

    def prompts(self, row):
        if json.loads(row["answers"]) or json.loads(row["facts"]):
            return []
        return [answers_prompt(row["question"], self.cfg.n_answers)]

    def fill(self, row, texts):
        row["answers"] = json.dumps(parse_answers(texts[0], self.cfg.n_answers))
        row["proposed"] = True


class WriteTask(_GenerateTask):
    """Evidence passages per answer and a negation per fact."""

    def prompts(self, row):
        styles = EVIDENCE_STYLES[: self.cfg.n_evidence]
        answers, facts = json.loads(row["answers"]), json.loads(row["facts"])
        if len(answers) < 2:  # a proposal that gave fewer than two answers makes no set
            answers = []
        return [evidence_prompt(row["question"], a, s) for a in answers for s in styles] + [
            negation_prompt(f) for f in facts
        ]

    def fill(self, row, texts):
        styles = EVIDENCE_STYLES[: self.cfg.n_evidence]
        answers, facts = json.loads(row["answers"]), json.loads(row["facts"])
        n_ev = len(texts) - len(facts)
        pairs = [(a, s) for a in answers for s in styles][:n_ev]
        row["evidence"] = json.dumps(
            [{"answer": a, "style": s, "text": parse_passage(t)} for (a, s), t in zip(pairs, texts)]
        )
        row["negations"] = json.dumps([{"fact": f, "text": parse_short(t)} for f, t in zip(facts, texts[n_ev:])])


class ReadTask(_GenerateTask):
    """Read-back answers of every passage, and minimal edits (substitution, else an LLM rewrite)."""

    def _edits(self, row) -> list[dict]:
        if not self.cfg.lexical:
            return []
        first: dict[str, str] = {}
        for ev in json.loads(row["evidence"]):
            first.setdefault(ev["answer"], ev["text"])
        edits = []
        for a, b in permutations(json.loads(row["answers"]), 2):
            if first.get(a):
                substituted = minimal_edit(first[a], a, b)
                edits.append({"a": a, "b": b, "source_text": first[a], "text": substituted,
                              "how": "substitution" if substituted else "llm"})  # fmt: skip
        return edits

    def prompts(self, row):
        reads = [readback_prompt(row["question"], ev["text"]) for ev in json.loads(row["evidence"]) if ev["text"]]
        rewrites = [edit_prompt(row["question"], e["source_text"], e["a"], e["b"])
                    for e in self._edits(row) if e["how"] == "llm"]  # fmt: skip
        return reads + rewrites

    def fill(self, row, texts):
        evidence, edits = json.loads(row["evidence"]), self._edits(row)
        it = iter(texts)
        for ev in evidence:
            ev["readback"] = parse_short(next(it)) if ev["text"] else ""
        for e in edits:
            if e["how"] == "llm":
                e["text"] = parse_passage(next(it))
            del e["source_text"]
        row["evidence"], row["edits"] = json.dumps(evidence), json.dumps(edits)


class ValidateTask:
    """NLI validation of passages, edits and negations (no LLM: the classifier is loaded once per actor)."""

    schema = ROW_SCHEMA
    engine = None

    def __init__(self, cfg: ValidationConfig):
        self.cfg = cfg
        self._clf: PairClassifier | None = None

    def __call__(self, rows: list[dict[str, Any]], engine: Engine | None) -> None:
        if self._clf is None:
            self._clf = PairClassifier(self.cfg.model, device=self.cfg.device, batch_size=self.cfg.batch_size,
                                       max_length=self.cfg.max_length)  # fmt: skip
        entail, contra = self._clf.label_index("entail"), self._clf.label_index("contra")
        if entail is None or contra is None:
            raise ValueError(f"validation.model {self.cfg.model!r} has labels {self._clf.labels}: an NLI model "
                             "needs entailment and contradiction labels")  # fmt: skip
        asks: list[tuple[str, str]] = []  # (premise, hypothesis), answered in one classifier call
        plans = []
        for row in rows:
            if row["error"] is not None:
                continue
            q = row["question"]
            evidence, edits, negations = (json.loads(row[k]) for k in ("evidence", "edits", "negations"))
            for ev in evidence:
                ev["entail_at"] = self._ask(asks, ev["text"], statement(q, ev["answer"]))
                read, answer = normalize(ev.get("readback", "")), normalize(ev["answer"])
                ev["agree_at"] = (None if answer and answer in read
                                  else self._ask(asks, statement(q, ev.get("readback", "")), statement(q, ev["answer"])))  # fmt: skip
            for e in edits:
                e["entail_at"] = self._ask(asks, e["text"], statement(q, e["b"]))
            for n in negations:
                same = normalize(n["text"]) == normalize(n["fact"])
                n["contra_at"] = -1 if same else self._ask(asks, n["fact"], n["text"])
            plans.append((row, evidence, edits, negations))
        probs = self._clf.probs([p for p, _ in asks], [h for _, h in asks]) if asks else []
        labels = self._clf.labels

        def p(at: int | None, label: int, exact: float = 1.0) -> float:
            if at is None:
                return exact
            return 0.0 if at < 0 else probs[at][labels[label]]

        v = self.cfg
        for row, evidence, edits, negations in plans:
            for ev in evidence:
                ev["entail"], ev["agree"] = p(ev.pop("entail_at"), entail), p(ev.pop("agree_at"), entail)
                ev["entailed"], ev["agreed"] = ev["entail"] >= v.min_entailment, ev["agree"] >= v.min_agreement
                ev["valid"] = ev["entailed"] and ev["agreed"] and bool(ev["text"])
            for e in edits:
                e["entail"] = p(e.pop("entail_at"), entail)
                e["valid"] = e["entail"] >= v.min_entailment
            for n in negations:
                n["contra"] = p(n.pop("contra_at"), contra)
                n["valid"] = n["contra"] >= v.min_contradiction
            row["evidence"], row["edits"], row["negations"] = (json.dumps(x) for x in (evidence, edits, negations))

    @staticmethod
    def _ask(asks: list[tuple[str, str]], premise: str, hypothesis: str) -> int:
        """Queue one NLI question; -1 (probability 0) when either side is empty."""
        if not premise.strip() or not hypothesis.strip():
            return -1
        asks.append((premise, hypothesis))
        return len(asks) - 1

    def close(self) -> None:
        self._clf = None


# -- assembling and reporting -------------------------------------------------------------------------------


def pairs_of(row: dict[str, Any]) -> list[dict]:
    """The conflict pairs of one validated row (as dicts)."""
    evidence, edits, negations = (json.loads(row[k]) for k in ("evidence", "edits", "negations"))
    valid: dict[str, list[str]] = {}
    for ev in evidence:
        if ev["valid"] and ev["text"]:
            valid.setdefault(ev["answer"], []).append(ev["text"])
    valid_edits = {(e["a"], e["b"]): e["text"] for e in edits if e["valid"] and e["text"]}
    pairs = answer_pairs(row["id"], row["question"], json.loads(row["answers"]), valid, valid_edits)
    pairs += factoid_pairs(row["id"], row["question"], json.loads(row["facts"]),
                           [n["text"] if n["valid"] else None for n in negations])  # fmt: skip
    return [p.model_dump() for p in pairs]


def check(cfg: MakeConflictsConfig) -> None:
    """The input file and the models exist (before Ray starts)."""
    require_path(cfg.input, "input")
    require_model(cfg.engine.model, "engine.model")
    require_model(cfg.validation.model, "validation.model")


def run(cfg: MakeConflictsConfig) -> Result:
    """Generate, validate and assemble conflict sets on the current Ray cluster; write the outputs listed in
    the module docstring to `cfg.output_dir`."""
    import ray

    check(cfg)
    out = Path(cfg.output_dir)
    with Workflow("make_conflicts", cfg, out) as wf:
        with wf.phase("read"):
            rows, errors = read_questions(cfg.input)
            lines_in = len(rows) + len(errors)
        done: list[dict] = []
        if rows:
            with wf.phase("generate"):
                log.info("generating conflict sets for %d questions with %s", len(rows), cfg.engine.model)
                if cfg.engine.model.startswith("tiny:"):
                    resolve_model_path(cfg.engine.model)  # build the tiny model once here, not in every actor
                tasks = [ProposeTask(cfg), WriteTask(cfg), ReadTask(cfg), ValidateTask(cfg.validation)]
                ds = engine_map(ray.data.from_items(rows), tasks, cfg.stage)
                done = sorted(ds.take_all(), key=lambda r: (r["source"], r["line"]))
        errors += [{"source": r["source"], "line": r["line"], "reason": r["error"],
                    "raw": json.dumps({"id": r["id"], "question": r["question"]})} for r in done if r["error"]]  # fmt: skip
        with wf.phase("assemble"):
            pairs: list[dict] = []
            candidates = []
            for row in (r for r in done if not r["error"]):
                mine = pairs_of(row)
                pairs += mine
                candidates.append({"id": row["id"], "question": row["question"], "source": row["source"],
                                   "line": row["line"], "proposed": row["proposed"],
                                   **{k: json.loads(row[k]) for k in ("answers", "facts", "evidence", "edits", "negations")},
                                   "pairs": len(mine)})  # fmt: skip
            summary = {"lines_in": lines_in, "errors": len(errors), **stage_counts(candidates, pairs)}
            write_outputs(out, cfg, candidates, pairs, errors, summary)
        return wf.finish(
            summary,
            f"{summary['pairs']} pairs ({summary['pairs_conflict']} conflicting) from {summary['questions_with_pairs']}"
            f" of {lines_in} questions ({len(errors)} errors) -> {out.resolve()}/pairs.jsonl",
        )


def stage_counts(candidates: list[dict], pairs: list[dict]) -> dict[str, int]:
    """How many items each stage produced and kept: the pipeline's funnel, for summary.json and report.md."""
    ev = [e for c in candidates for e in c["evidence"]]
    edits = [e for c in candidates for e in c["edits"]]
    negs = [n for c in candidates for n in c["negations"]]
    counts = {
        "questions": len(candidates),
        "answers_proposed": sum(len(c["answers"]) for c in candidates if c["proposed"]),
        "answers": sum(len(c["answers"]) for c in candidates),
        "evidence_written": sum(bool(e["text"]) for e in ev),
        "evidence_entailed": sum(e["entailed"] for e in ev),
        "evidence_agreed": sum(e["agreed"] for e in ev),
        "evidence_valid": sum(e["valid"] for e in ev),
        "edits_substituted": sum(e["how"] == "substitution" for e in edits),
        "edits_rewritten": sum(e["how"] == "llm" for e in edits),
        "edits_valid": sum(e["valid"] for e in edits),
        "facts": len(negs),
        "negations_valid": sum(n["valid"] for n in negs),
        "questions_with_pairs": sum(c["pairs"] > 0 for c in candidates),
        "pairs": len(pairs),
        "pairs_conflict": sum(p["conflict"] for p in pairs),
    }
    for kind in ("answer", "lexical", "factoid"):
        counts[f"pairs_{kind}"] = sum(p["kind"] == kind for p in pairs)
    return counts


def write_outputs(out: Path, cfg: MakeConflictsConfig, candidates: list[dict], pairs: list[dict],
                  errors: list[dict], summary: dict) -> None:  # fmt: skip
    """pairs.jsonl, candidates.jsonl, errors/errors.parquet and report.md."""
    out.mkdir(parents=True, exist_ok=True)
    for name, items in (("pairs.jsonl", pairs), ("candidates.jsonl", candidates)):
        with (out / name).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(x, ensure_ascii=False) + "\n" for x in items)
    (out / "errors").mkdir(exist_ok=True)
    pd.DataFrame(errors, columns=["source", "line", "reason", "raw"]).to_parquet(out / "errors" / "errors.parquet")
    lines = [f"# Conflict-set generation: `{cfg.input}`", "",
             (f"Generator `{cfg.engine.model}` ({cfg.engine.backend}), validator `{cfg.validation.model}` "
             f"(entailment >= {cfg.validation.min_entailment}, agreement >= {cfg.validation.min_agreement}, "
             f"contradiction >= {cfg.validation.min_contradiction})."), "",
             "| stage | count |", "|---|---|"]  # fmt: skip
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
