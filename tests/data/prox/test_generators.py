"""Chunking, prompts, and both program generators (rules; lm on a real tiny model through the HF engine)."""

import pyarrow as pa
import pytest
from transformers import AutoTokenizer

from rayflow.data.engine_stage import EngineStage
from rayflow.data.prox import ExecutorConfig, execute_chunk_program, execute_doc_program
from rayflow.data.prox.chunking import chunk_document, number_lines
from rayflow.data.prox.lm import LMConfig, LMGenerator
from rayflow.data.prox.prompts import SYSTEM_PROMPT, chunk_prompt_ids, doc_prompt_ids
from rayflow.data.prox.reader import READ_SCHEMA
from rayflow.data.prox.rules import RulesConfig, RulesGenerator, boilerplate_rule
from rayflow.data.prox.stage import ChunkLevel, DocLevel
from rayflow.llm import EngineConfig
from tests.data.prox.conftest import sample_rows


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def count(tokenizer, line):
    return len(tokenizer.encode(line))


def test_lines_are_numbered_globally_with_three_digits_and_more():
    lines = number_lines("\n".join(f"l{i}" for i in range(1002)))
    assert (
        lines[0] == "[000]l0"
        and lines[7] == "[007]l7"
        and lines[999] == "[999]l999"
        and lines[1001] == "[1001]l1001"
    )
    assert number_lines("") == ["[000]"]


def test_chunks_pack_greedily_under_the_token_budget(tokenizer):
    text = "\n".join(f"line number {i} says something short" for i in range(60))
    chunks = chunk_document(text, tokenizer, max_tokens=80)
    assert len(chunks) > 3
    assert "\n".join(chunks).split("\n") == number_lines(text)  # every line once, in order
    for chunk in chunks:
        assert sum(count(tokenizer, line) for line in chunk.split("\n")) <= 80
    # Greedy: the next chunk's first line would not have fit.
    first, second = chunks[0].split("\n"), chunks[1].split("\n")
    assert sum(count(tokenizer, x) for x in first + second[:1]) > 80


@pytest.mark.parametrize("policy", ["own_chunk", "truncate", "skip"])
def test_long_line_policy(tokenizer, policy):
    text = "short one\n" + "word " * 200 + "\nshort two"
    chunks = chunk_document(text, tokenizer, max_tokens=40, long_line=policy)
    if policy == "own_chunk":
        assert chunks == ["[000]short one", "[001]" + "word " * 200, "[002]short two"]
    elif policy == "truncate":
        assert len(chunks) == 3 and chunks[1].startswith("[001]word") and count(tokenizer, chunks[1]) <= 41
    else:
        assert chunks == ["[000]short one", "[002]short two"]


def test_prompts_use_the_chat_template_and_cut_the_doc_prompt(tokenizer):
    ids = doc_prompt_ids(tokenizer, "A document. " * 300, max_prompt_tokens=100)
    assert len(ids) == 100
    rendered = tokenizer.decode(doc_prompt_ids(tokenizer, "Hello page"))
    assert SYSTEM_PROMPT in rendered and "Hello page" in rendered
    chunk = tokenizer.decode(chunk_prompt_ids(tokenizer, "[000]a\n[001]b"))
    assert "[doc]\n[000]a\n[001]b\n[/doc]" in chunk


def test_rules_remove_boilerplate_and_keep_content():
    for line in [
        "Skip to content",
        "Home | About | Contact",
        "© 2024 Example. All rights reserved.",
        "We use cookies to improve your experience.",
        "Share on Facebook",
        "Subscribe to our newsletter",
    ]:
        assert boilerplate_rule(line), line
    for line in ["Tomatoes grow well in pots as long as the pots are large.", "The cookie jar was empty."]:
        assert boilerplate_rule(line) is None, line
    generator = RulesGenerator(RulesConfig())
    rows = {r["id"]: r["text"] for r in sample_rows()}
    program = generator.chunk_programs([rows["web-coffee"]])[0].program
    refined = execute_chunk_program(rows["web-coffee"], program)
    assert refined.kept and refined.n_error_ops == 0 and "Brewing Better Coffee at Home" in refined.text
    assert "remove_lines(line_start=0," in program and "#" in program
    doc = generator.doc_programs([rows["web-coffee"], rows["web-lorem-1"], rows["web-list-1"]])
    assert [execute_doc_program(g.program).keep for g in doc] == [True, False, False]
    assert doc[1].program.startswith("# c4_lorem_ipsum") and "gopher_alpha_words" in doc[2].program


def stage_batch(texts):
    rows = [
        {
            "id": f"d{i}",
            "text": t,
            "source": "s.jsonl",
            "row": i,
            "error": None,
            "reason": "",
            "raw": "",
            "extra": "{}",
        }
        for i, t in enumerate(texts)
    ]
    return pa.Table.from_pylist(rows, schema=READ_SCHEMA)


def test_lm_generator_runs_the_real_path_on_a_tiny_model(tiny_model):
    engine = EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=512)
    lm = LMConfig(
        doc_engine=engine,
        chunk_engine=engine,
        doc_max_tokens=8,
        chunk_tokens=120,
        chunk_max_tokens=12,
        long_line="truncate",
    )
    generator = LMGenerator(lm)
    # Both levels name the same model: the fused stage builds one engine for them.
    stage = EngineStage([DocLevel(generator, engine), ChunkLevel(generator, engine, ExecutorConfig())])
    assert stage.engines[0] is stage.engines[1]
    texts = [r["text"] for r in sample_rows()[:3]] + ["word " * 2000]  # the last is far over the context
    docs = generator.doc_programs(texts, stage.engines[0])
    assert all(g.error is None and g.prompt_tokens <= 512 - 8 for g in docs)
    chunks = generator.chunk_programs(texts, stage.engines[0])
    assert all(g.error is None for g in chunks) and chunks[0].n_prompts >= 2
    # The stage turns noise programs into rows without failing; every row comes out.
    out = stage(stage_batch(texts)).to_pylist()
    assert [r["id"] for r in out] == ["d0", "d1", "d2", "d3"] and all(r["error"] is None for r in out)
    assert all(r["tokens_in"] > 0 and r["words_in"] > 0 for r in out)
    assert all(r["refined"] in ("", r["text"]) or r["kept"] for r in out)


def test_rules_stage_counts_the_tokens_of_dropped_documents(tiny_model):
    rows = {r["id"]: r["text"] for r in sample_rows()}
    generator = RulesGenerator(RulesConfig(), tokenizer=str(tiny_model))
    stage = EngineStage([DocLevel(generator, None), ChunkLevel(generator, None, ExecutorConfig())])
    kept, dropped = stage(stage_batch([rows["web-coffee"], rows["web-lorem-1"]])).to_pylist()
    assert kept["kept"] and 0 < kept["tokens_out"] < kept["tokens_in"]
    assert not dropped["kept"] and dropped["drop_reason"] == "doc"
    assert dropped["tokens_in"] > 0 and dropped["tokens_out"] == 0 and dropped["words_in"] > 0
