"""Refiner training data, metrics and the shipped tiny refiner (docs/prox_refiner.md).

Annotation keeps only parseable programs; its prompts are the ProX job's byte for byte; the evaluation figures
on hand-computed cases; the annotate -> train -> evaluate jobs on a few documents (a short SFT, never the real
build); `tiny:refiner`'s programs through the ProX job end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rayflow.config import load_config
from rayflow.data.prox.annotate import (
    AnnotateConfig,
    AnnotateTask,
    canonical_program,
    chunk_line_range,
    program_problem,
)
from rayflow.data.prox.executor import execute_doc_program
from rayflow.data.prox.lm import LMGenerator
from rayflow.data.prox.parser import FUNCTIONS_CHUNK, parse_program
from rayflow.data.prox.pipeline import ProxRefineConfig
from rayflow.data.prox.refiner_eval import removed_lines, score
from rayflow.data.prox.rules import RulesConfig, RulesGenerator
from rayflow.data.prox.web_pages import make_pages, make_templates, split_of_template
from rayflow.llm import EngineConfig, build_engine, load_tokenizer, resolve_model_path
from rayflow.train.preference_data import response_ids

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "examples" / "web_corpus.jsonl"


def shipped(n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    return [{"doc_id": r["id"], "split": "heldout", "text": r["text"]} for r in rows[:n]]


def job_lm(backend: str = "hf"):
    """configs/prox_refine_lm.yaml's lm section, on `backend`."""
    lm = load_config(ProxRefineConfig, REPO / "configs" / "prox_refine_lm.yaml").lm
    engine = lm.doc_engine.model_copy(update={"backend": backend})
    return lm.model_copy(update={"doc_engine": engine, "chunk_engine": engine})


def examples_of(rows: list[dict]) -> list[dict]:
    return [e for r in rows for e in json.loads(r["examples"])]


def test_generated_pages_hold_out_templates_and_are_deterministic():
    held = {t["id"] for t in make_templates() if split_of_template(t["id"]) == "heldout"}
    train_pages, held_pages = list(make_pages(60, "train")), list(make_pages(30, "heldout"))
    assert {p["template"] for p in train_pages}.isdisjoint(held)
    assert {p["template"] for p in held_pages} - {-1} <= held
    assert train_pages == list(make_pages(60, "train"))
    assert {p["kind"] for p in train_pages} == {"article", "low_quality"}


def test_program_problem_names_what_the_parser_cannot_read():
    assert program_problem("remove_lines(line_start=3, line_end=4)", "chunk", 0, 9) is None
    assert program_problem("remove_lines(line_start=3, line_end=", "chunk", 0, 9) == "2 error op(s)"
    assert program_problem("delete(3)", "chunk", 0, 9) == "1 unknown call(s)"
    assert program_problem("Sure! Here is the program.", "chunk", 0, 9) == "no valid call"
    assert "outside lines 0..9" in program_problem("remove_lines(line_start=8, line_end=12)", "chunk", 0, 9)
    assert program_problem("drop_doc()", "doc", 0, 9) is None


def test_canonical_program_merges_touching_intervals_and_drops_comments():
    ops = list(
        parse_program(
            "remove_lines(line_start=3, line_end=5)  # a\nremove_lines(line_start=0, line_end=1)\n"
            'remove_lines(line_start=2, line_end=2)\nnormalize(source_str="[edit]", target_str="")',
            FUNCTIONS_CHUNK,
        ).ops
    )
    assert (
        canonical_program(ops, "chunk")
        == 'remove_lines(line_start=0, line_end=5)\nnormalize(source_str="[edit]")'
    )
    assert canonical_program([("normalize", " ", ""), ("normalize", "a", "b")], "chunk") == (
        'normalize(source_str=" ", target_str="")\nnormalize(source_str="a", target_str="b")'
    )
    assert canonical_program([], "chunk") == "keep_chunk()"


def test_rules_annotation_restricts_the_teachers_program_to_each_chunk():
    cfg = AnnotateConfig(teacher="rules", lm=job_lm())
    rows = shipped()
    AnnotateTask(cfg)(rows, None)
    rules = RulesGenerator(RulesConfig())
    for row in rows:
        assert json.loads(row["errors"]) == []
        examples = json.loads(row["examples"])
        doc, chunks = examples[0], examples[1:]
        assert doc["level"] == "doc" and doc["program"] in ("keep_doc()", "drop_doc()")
        assert (
            execute_doc_program(doc["program"]).keep
            == execute_doc_program(rules._doc_program(row["text"])).keep
        )
        n_lines = len(row["text"].split("\n"))
        # The chunks cover the document's lines in order, and their programs together remove what the teacher's
        # whole-document program removes.
        assert [chunk_line_range(c["source"]) for c in chunks] == [
            (c["first_line"], c["last_line"]) for c in chunks
        ]
        assert chunks[0]["first_line"] == 0 and chunks[-1]["last_line"] == n_lines - 1
        teacher = removed_lines([rules._chunk_program(row["text"])], n_lines)
        assert removed_lines([c["program"] for c in chunks], n_lines) == teacher
        for c in chunks:
            assert program_problem(c["program"], "chunk", c["first_line"], c["last_line"]) is None


def test_an_engine_teacher_keeps_only_programs_the_parser_reads():
    """A real (untrained) model as teacher: what it writes is kept only when it parses; nothing is lost."""
    engine_cfg = EngineConfig(backend="hf", model="tiny:tiny", max_model_len=1024)
    cfg = AnnotateConfig(teacher="engine", engine=engine_cfg, teacher_max_tokens=24, lm=job_lm())
    rows = shipped(3)
    engine = build_engine(engine_cfg)
    try:
        AnnotateTask(cfg)(rows, engine)
    finally:
        engine.close()
    tokenizer = load_tokenizer(cfg.lm.doc_engine)
    n_prompts = sum(1 + len(LMGenerator(cfg.lm).chunk_prompts([r["text"]], tokenizer, 256)[0]) for r in rows)
    kept = examples_of(rows)
    errors = [e for r in rows for e in json.loads(r["errors"])]
    assert len(kept) + len(errors) == n_prompts
    assert errors and all(e["reason"] for e in errors)
    # The untrained model wrote its answers (nothing was refused), and they were read and rejected.
    assert not any(e["reason"].startswith("the teacher refused") for e in errors)
    for e in kept:
        assert program_problem(e["teacher_program"], e["level"], e["first_line"], e["last_line"]) is None


def test_training_prompts_are_the_prompts_the_job_sends_byte_for_byte():
    """Annotation with configs/prox_refine_lm.yaml's settings vs what the lm generator sends to tiny:refiner."""
    lm = job_lm()
    rows = shipped(6)
    AnnotateTask(AnnotateConfig(lm=lm))(rows, None)
    examples = examples_of(rows)

    engine = build_engine(lm.doc_engine)
    sent: list[list[int]] = []
    generate = engine.generate
    engine.generate = lambda prompts, params: (
        sent.extend(list(p) for p in prompts) or generate(prompts, params)
    )
    try:
        generator = LMGenerator(lm)
        texts = [r["text"] for r in rows]
        generator.doc_programs(texts, engine)
        generator.chunk_programs(texts, engine)
    finally:
        engine.close()
    docs = [e["prompt_ids"] for e in examples if e["level"] == "doc"]
    chunks = [e["prompt_ids"] for e in examples if e["level"] == "chunk"]
    assert sent == docs + chunks
    tokenizer = load_tokenizer(lm.doc_engine)
    for e in examples:
        ids = response_ids(tokenizer, e["program"])
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]) == e["program"]


def test_the_refiner_records_the_prompts_it_was_trained_on():
    info = json.loads((Path(resolve_model_path("tiny:refiner")) / "refiner.json").read_text())
    job = job_lm()
    for key in ("doc_max_prompt_tokens", "doc_max_tokens", "chunk_tokens", "chunk_max_tokens", "long_line"):
        assert info["lm"][key] == getattr(job, key), key
    assert info["lm"]["doc_engine"]["max_model_len"] == job.doc_engine.max_model_len
    assert info["prompt_preset"] == job.resolved_preset == "rayflow" and info["teacher"] == "rules"
    annotate = load_config(AnnotateConfig, REPO / "configs" / "prox_annotate.yaml").lm
    assert annotate.model_dump(exclude={"doc_engine", "chunk_engine"}) == job.model_dump(
        exclude={"doc_engine", "chunk_engine"}
    )


def _example(doc_id, level, program, refiner, first=0, last=0):
    return {
        "doc_id": doc_id, "level": level, "chunk_index": 0, "first_line": first, "last_line": last,
        "program": program, "refiner_program": refiner,
    }  # fmt: skip


def test_evaluation_figures_on_hand_computed_cases():
    examples = [
        # doc level: teacher drops a; refiner drops a and b -> tp 1, fp 1, fn 0
        _example("a", "doc", "drop_doc()", "drop_doc()"),
        _example("b", "doc", "keep_doc()", "# spam\ndrop_doc()"),
        _example("c", "doc", "keep_doc()", "keep_doc()"),
        # c has 10 lines in two chunks. Teacher removes 0-2 and 8-9; refiner 0-1 and 7-9 -> tp 4, fp 1, fn 1.
        _example(
            "c",
            "chunk",
            "remove_lines(line_start=0, line_end=2)",
            "remove_lines(line_start=0, line_end=1)",
            0,
            4,
        ),
        _example(
            "c",
            "chunk",
            'remove_lines(line_start=8, line_end=9)\nnormalize(source_str="[edit]", target_str="")',
            'remove_lines(line_start=7, line_end=9)\nnormalize(source_str="[edit]")\nnormalize(source_str="x", target_str="y")',
            5,
            9,
        ),
        # a has 3 lines: the refiner's program is cut off (2 error ops) -> parse failure, no line removed
        _example("a", "chunk", "keep_chunk()", "remove_lines(line_start=0, line_end=", 0, 2),
    ]
    s = score(examples)
    assert s["doc"]["precision"] == 0.5 and s["doc"]["recall"] == 1.0
    assert s["doc_f1"] == pytest.approx(2 / 3)
    assert (s["chunk_lines"]["tp"], s["chunk_lines"]["fp"], s["chunk_lines"]["fn"]) == (4, 1, 1)
    assert s["chunk_line_f1"] == pytest.approx(0.8) and s["chunk_lines"]["lines"] == 13
    assert s["normalize_match"] == pytest.approx(1 / 2)  # ("[edit]", "") matched; ("x", "y") extra
    assert s["parse_fail_rate"] == pytest.approx(1 / 6)
    assert s["parse_fail_by_level"] == {"doc": 0.0, "chunk": 0.3333}


def test_annotate_train_and_evaluate_jobs_on_a_few_documents(ray_session, tmp_path):
    from rayflow.data.prox import annotate, refiner_eval
    from rayflow.train import prox_refiner

    lm = job_lm().model_copy(
        update={"doc_engine": job_lm().doc_engine.model_copy(update={"model": "tiny:tiny"})}
    )
    ann = annotate.run(
        AnnotateConfig(
            output_dir=str(tmp_path / "ann"),
            heldout_inputs=[str(CORPUS)],
            generated={"train": 12, "heldout": 0},
            lm=lm,
            stage={"actors": 1, "batch_size": 8},
        )
    )
    train = pq.read_table(tmp_path / "ann" / "train.parquet").to_pylist()
    held = pq.read_table(tmp_path / "ann" / "heldout.parquet").to_pylist()
    assert {e["doc_id"] for e in held} == {json.loads(line)["id"] for line in CORPUS.read_text().splitlines()}
    assert {e["doc_id"] for e in train}.isdisjoint({e["doc_id"] for e in held})
    assert (
        ann.summary["examples"] == {"train": len(train), "heldout": len(held)}
        and ann.summary["rejected"] == 0
    )

    trained = prox_refiner.run(
        prox_refiner.RefinerTrainConfig(
            data=str(tmp_path / "ann"),
            model="tiny:tiny",
            output_dir=str(tmp_path / "train"),
            eval_examples=4,
            train={"num_workers": 1, "zero_stage": 0, "micro_batch_size": 4, "max_steps": 2, "lr": 1e-3},
        )
    )
    model = tmp_path / "train" / "model"
    info = json.loads((model / "refiner.json").read_text())
    assert info["prompt_preset"] == ann.summary["prompt_preset"] and info["train_examples"] == len(train)
    assert trained.summary["models"]["model"]["final_metrics"]["step"] == 2

    evaluated = refiner_eval.run(
        refiner_eval.RefinerEvalConfig(
            data=str(tmp_path / "ann"),
            engine={"backend": "hf", "model": str(model), "max_model_len": 256},
            output_dir=str(tmp_path / "eval"),
            max_documents=3,
        )
    )
    s = evaluated.summary
    assert s["documents"] == 3 and s["programs"] == sum(
        e["doc_id"] in sorted({h["doc_id"] for h in held})[:3] for e in held
    )
    for key in ("doc_f1", "chunk_line_f1", "normalize_match", "parse_fail_rate"):
        assert key in s
    assert (tmp_path / "eval" / "report.md").read_text().startswith("# ProX refiner vs teacher")


def test_the_tiny_refiner_refines_the_shipped_corpus_through_the_job(ray_session, tmp_path):
    from rayflow.data.prox import pipeline

    cfg = load_config(
        ProxRefineConfig,
        REPO / "configs" / "prox_refine_lm.yaml",
        [f"output_dir={tmp_path}", "lm.doc_engine.backend=hf", "lm.chunk_engine.backend=hf"],
    )
    result = pipeline.run(cfg)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "data").to_pylist()}
    assert result.summary["errors"] == 0 and len(rows) == 20
    # The refiner's programs are the job's programs, executed by the job.
    for r in rows.values():
        assert execute_doc_program(r["doc_program"]).keep == (r["drop_reason"] != "doc")
    parsed = [parse_program(r["chunk_program"], FUNCTIONS_CHUNK) for r in rows.values() if r["chunk_program"]]
    assert parsed and sum(p.n_error_ops == 0 and len(p.ops) > 0 for p in parsed) / len(parsed) >= 0.8
    # It learned the teacher's calls (an untrained model's unreadable programs would keep every page untouched):
    # it drops most of the low-quality pages the rules drop, and on the pages both keep it removes most of the
    # lines the rules remove. (It also drops some hand-written articles: docs/prox_refiner.md.)
    rules = RulesGenerator(RulesConfig())
    teacher_drops = {
        i for i, r in rows.items() if not execute_doc_program(rules._doc_program(r["raw_content"])).keep
    }
    refiner_drops = {i for i, r in rows.items() if r["drop_reason"] == "doc"}
    assert len(teacher_drops) == 6 and len(teacher_drops & refiner_drops) >= 4
    teacher_lines = matched = 0
    for i, r in rows.items():
        if i not in teacher_drops | refiner_drops:
            n = len(r["raw_content"].split("\n"))
            teacher = removed_lines([rules._chunk_program(r["raw_content"])], n)
            teacher_lines += len(teacher)
            matched += len(teacher & removed_lines([r["chunk_program"]], n))
    assert teacher_lines > 0 and matched / teacher_lines >= 0.6
    sourdough = rows["web-sourdough"]
    assert sourdough["kept"] and "A sourdough starter is a living culture" in sourdough["text"]
    assert len(sourdough["text"].split("\n")) < len(sourdough["raw_content"].split("\n"))
