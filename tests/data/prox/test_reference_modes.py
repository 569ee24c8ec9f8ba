"""ProX's own behaviour, available by name: the `prox` prompt preset and the executor's `reference` semantics.

Expected strings are written out from GAIR-NLP/ProX's code: `data_gen/tasks/apply_doc_refining.py` (the doc
prompt: Llama-2-chat template via `--token_template`, `truncation=True, max_length=2000`, max_tokens 2000),
`data_gen/tasks/apply_chunk_refining.py` (the chunk prompt: the model's template with `tokenize=False`, the text
sent to vLLM), `utils/doc_utils.py` ("drop" anywhere drops) and `utils/chunk_utils.py` (string-split arguments).
"""

import pyarrow as pa
import pytest
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, LlamaTokenizerFast

from rayflow.config import load_config
from rayflow.data.engine_stage import EngineStage
from rayflow.data.prox import ExecutorConfig, execute_chunk_program, execute_doc_program
from rayflow.data.prox.lm import LMConfig, LMGenerator
from rayflow.data.prox.output import Output, compute_stats
from rayflow.data.prox.pipeline import ProxRefineConfig
from rayflow.data.prox.prompts import (
    LLAMA2_CHAT_TEMPLATE,
    SYSTEM_PROMPT,
    chunk_prompt_ids,
    chunk_prompt_text,
    doc_prompt_ids,
    doc_prompt_text,
)
from rayflow.data.prox.reader import READ_SCHEMA
from rayflow.data.prox.reference import reference_chunk_execute
from rayflow.data.prox.stage import ChunkLevel, DocLevel
from rayflow.llm import EngineConfig, prompt_token_ids
from tests.conftest import REPO

REFERENCE = ExecutorConfig(semantics="reference")

# Llama-2-chat's rendering of ProX's doc prompt (system prompt of apply_doc_refining.py), BOS = the model's own
# (ProX sets the template tokenizer's bos_token to the refiner's). The user text is stripped by the template.
LLAMA2_DOC_PROMPT = (
    "{bos}[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.\n<</SYS>>\n\n{text} [/INST]"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def llama_like(tiny_model):
    """A tokenizer that behaves as Llama-2's does where ProX's chunk prompt meets it: it adds BOS when it encodes
    text with special tokens, and its chat template (Llama-2-chat's) writes BOS too."""
    tok = AutoTokenizer.from_pretrained(tiny_model)
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]
    )
    tok.chat_template = LLAMA2_CHAT_TEMPLATE
    return tok


# -- prompts ----------------------------------------------------------------------------------------------------


def test_prox_doc_prompt_is_llama2_chat_with_the_models_bos(tokenizer):
    expected = LLAMA2_DOC_PROMPT.format(bos=tokenizer.bos_token, text="Hello page")
    assert doc_prompt_text(tokenizer, "Hello page \n\n", "llama2_chat") == expected
    ids = doc_prompt_ids(tokenizer, "Hello page", 2000, "llama2_chat")
    assert ids == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    # Cut at max_length like ProX's truncation: a long document loses its end and the closing [/INST].
    long_ids = doc_prompt_ids(tokenizer, "A document. " * 400, 100, "llama2_chat")
    assert len(long_ids) == 100 and "[/INST]" not in tokenizer.decode(long_ids)
    # The rayflow preset keeps the model's own template.
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Hello page"}]
    assert doc_prompt_ids(tokenizer, "Hello page") == prompt_token_ids(tokenizer, messages)


def test_prox_chunk_prompt_is_template_text_encoded_as_vllm_does(llama_like):
    chunk = "[000]Menu\n[001]Bees build combs."
    text = chunk_prompt_text(llama_like, chunk)
    assert text == LLAMA2_DOC_PROMPT.format(bos=llama_like.bos_token, text=f"[doc]\n{chunk}\n[/doc]")
    bos = llama_like.bos_token_id
    ids = chunk_prompt_ids(llama_like, chunk, None, "template_text")
    # vLLM encodes a text prompt with special tokens: its BOS, then the template's: two, as ProX sends them.
    assert ids[:3] != [bos] * 3 and ids[:2] == [bos, bos]
    assert ids == [bos] + llama_like(text, add_special_tokens=False)["input_ids"]
    # rayflow's encoding tokenises the template at once: one BOS.
    assert chunk_prompt_ids(llama_like, chunk).count(bos) == 1


def test_a_llama_tokenizer_without_a_template_gets_llama2_chat_as_proxs_transformers_gives_it(tokenizer):
    bare = LlamaTokenizerFast(tokenizer_object=tokenizer._tokenizer, bos_token=tokenizer.bos_token)
    assert bare.chat_template is None
    assert chunk_prompt_text(bare, "[000]a") == LLAMA2_DOC_PROMPT.format(
        bos=bare.bos_token, text="[doc]\n[000]a\n[/doc]"
    )


def test_presets_set_defaults_that_a_config_can_override(tiny_model, tmp_path):
    tiny = EngineConfig(backend="hf", model=str(tiny_model))
    ours = LMConfig(doc_engine=tiny, chunk_engine=tiny)  # auto: not a released ProX refiner -> rayflow
    assert (ours.resolved_preset, ours.doc_max_tokens, ours.doc_template) == ("rayflow", 32, "model")
    # auto with ProX's released refiners (the default models) -> prox, as ProX runs them.
    for prox in (LMConfig(), LMConfig(doc_engine=tiny, chunk_engine=tiny, preset="prox")):
        assert prox.resolved_preset == "prox"
        assert (prox.doc_template, prox.chunk_encoding, prox.doc_max_tokens, prox.reserve_program_room) == (
            "llama2_chat",
            "template_text",
            2000,
            False,
        )
        assert (
            prox.doc_max_prompt_tokens == 2000 and prox.chunk_max_tokens == 256 and prox.chunk_tokens == 1500
        )
        assert LMConfig.model_validate(prox.model_dump()) == prox
    assert LMConfig(preset="prox", doc_max_tokens=64).doc_max_tokens == 64
    assert LMConfig(preset="rayflow").doc_template == "model"
    # The shipped lm config keeps its behaviour; a preset set later switches what the file leaves unset.
    shipped = load_config(ProxRefineConfig, REPO / "configs" / "prox_refine_lm.yaml")
    assert shipped.lm.resolved_preset == "rayflow" and shipped.lm.doc_template == "model"
    path = tmp_path / "lm.yaml"
    path.write_text(
        "lm:\n  doc_engine: {model: tiny:tiny}\n  chunk_engine: {model: tiny:tiny}\n  doc_max_tokens: 16\n"
    )
    cfg = load_config(ProxRefineConfig, path)
    assert (cfg.lm.resolved_preset, cfg.lm.doc_template, cfg.lm.doc_max_tokens) == ("rayflow", "model", 16)
    over = load_config(ProxRefineConfig, path, ["lm.preset=prox"])
    assert over.lm.doc_template == "llama2_chat" and over.lm.doc_max_tokens == 16  # the file's value wins
    released = ["lm.doc_engine.model=gair-prox/web-doc-refining-lm", "lm.chunk_engine.model=gair-prox/x"]
    assert load_config(ProxRefineConfig, path, released).lm.doc_template == "llama2_chat"


def test_prompt_budgets_fit_the_context_as_each_preset_says(tokenizer):
    text = ["word " * 3000]
    prox, ours = LMGenerator(LMConfig(preset="prox")), LMGenerator(LMConfig(preset="rayflow"))
    # ProX: the prompt is cut only at 2000 tokens (here the 512-token context, less one), the program ending at
    # the context; rayflow leaves the program's budget free.
    assert len(prox.doc_prompts(text, tokenizer, 512)[0]) == 511 and prox.max_tokens("doc", 512) == 512
    assert len(prox.doc_prompts(text, tokenizer, 4096)[0]) == 2000 and prox.max_tokens("doc", 4096) == 2000
    assert len(ours.doc_prompts(text, tokenizer, 512)[0]) == 512 - 32 and ours.max_tokens("doc", 512) == 32


def test_prox_preset_runs_on_a_real_tiny_model(tiny_model):
    engine_cfg = EngineConfig(backend="hf", model=str(tiny_model), dtype="float32", max_model_len=256)
    lm = LMConfig(
        doc_engine=engine_cfg, chunk_engine=engine_cfg, preset="prox", chunk_tokens=60, chunk_max_tokens=4
    )
    generator = LMGenerator(lm)
    stage = EngineStage([DocLevel(generator, engine_cfg, ExecutorConfig())])
    engine = stage.engines[0]
    # A document longer than the context: the prompt fills it but one token, so the program gets one token.
    (doc,) = generator.doc_programs(["Bees build combs of wax. " * 200], engine)
    assert doc.error is None and doc.prompt_tokens == 255 and doc.program_tokens <= 1
    chunks = generator.chunk_programs(["Line one of a page.\nLine two of it.\n" * 8], engine)
    assert chunks[0].error is None and chunks[0].n_prompts >= 2


# -- executor semantics -----------------------------------------------------------------------------------------

DOC = "\n".join(
    ["Home | Blog | Bees", "Posted by admin"]
    + [
        f"Paragraph {i}: honeybees choose a new home by a vote among scouts, as studies show."
        for i in range(6)
    ]
)
BODY = "\n".join(DOC.split("\n")[2:])


@pytest.mark.parametrize(
    "program",
    ["# drop this page\nkeep_doc()", "drop_doc", "drop_doc(reason='spam')", "I would drop it.\nkeep_doc()"],
)
def test_reference_semantics_drops_a_document_on_drop_anywhere(program):
    assert not execute_doc_program(program, REFERENCE).keep
    assert execute_doc_program(program).keep  # strict: no valid drop_doc() call


@pytest.mark.parametrize(
    "program",
    [
        "remove_lines(start=0, end=1)",  # ProX never reads the keyword's name
        'remove_lines(line_start=0, line_end=1, reason="navigation")',  # a third argument is ignored
    ],
)
def test_reference_semantics_accepts_the_calls_prox_accepts(program):
    result = execute_chunk_program(DOC, program, REFERENCE)
    assert result.text == BODY and result.n_error_ops == 0 and result.kept
    strict = execute_chunk_program(DOC, program)  # strict: not a valid call, one error op, nothing removed
    assert strict.text == DOC and strict.n_error_ops == 1


def test_reference_semantics_reproduces_proxs_normalize_quirks():
    # Two arguments: the second is the target, whatever its name (utils/chunk_utils.py, len(params) == 2).
    swapped = execute_chunk_program(DOC, 'normalize(source_str="honeybees", reason="bees")', REFERENCE)
    assert swapped.text == DOC.replace("honeybees", "bees") and swapped.n_error_ops == 0
    # Three arguments: ProX does nothing and counts no error.
    three = 'normalize(source_str="honeybees", target_str="bees", reason="x")'
    assert execute_chunk_program(DOC, three, REFERENCE).text == DOC
    # `all=True` anywhere in a remove_lines line removes every line: the document is dropped.
    gone = execute_chunk_program(DOC, 'remove_lines(all=True, reason="spam")', REFERENCE)
    assert not gone.kept and gone.drop_reason == "ratio"
    # A URL cuts the string at its first `=` / `,` / `)`, as ProX reads it.
    url = 'normalize(source_str="see https://x.org/?a=1", target_str="")'
    page = "see https://x.org/?a=1 " + DOC
    assert (
        execute_chunk_program(page, url, REFERENCE).text
        == "=1 " + DOC
        == reference_chunk_execute(page, url)[0]
    )
    # Strict reads these as rayflow's documentation says (an error op; the URL whole).
    assert execute_chunk_program(DOC, 'normalize(source_str="honeybees", reason="bees")').n_error_ops == 1
    assert execute_chunk_program(page, url).text == " " + DOC


def test_reference_semantics_figures_and_empty_documents():
    result = execute_chunk_program(
        DOC, "remove_lines(start=0, end=1)\nremove_lines(line_start=40, line_end=41)", REFERENCE
    )
    assert (result.n_error_ops, result.lines_removed, result.words_in) == (1, 2, len(DOC.split()))
    assert result.words_out == len(BODY.split()) and result.kept and not result.fallback
    fallback = execute_chunk_program(DOC, "remove_lines(0)\nremove_lines(x=1)", REFERENCE)
    assert fallback.fallback and fallback.text == DOC and fallback.n_error_ops == 2
    # ProX divides by zero on a document with no words; both readings drop it as empty.
    assert execute_chunk_program(" \n ", "keep_chunk()", REFERENCE).drop_reason == "empty"


def _batch(texts):
    rows = [
        {
            "id": f"d{i}",
            "text": t,
            "source": "s",
            "row": i,
            "error": None,
            "reason": "",
            "raw": "",
            "extra": "{}",
        }
        for i, t in enumerate(texts)
    ]
    return pa.Table.from_pylist(rows, schema=READ_SCHEMA)


class _Scripted:
    """Unit-test generator: fixed programs per text (the executor, not a model, is under test)."""

    def __init__(self, doc: dict, chunk: dict):
        self.doc, self.chunk = doc, chunk

    def doc_programs(self, texts, engine):
        from rayflow.data.prox.generator import Generated

        return [Generated(self.doc[t]) for t in texts]

    def chunk_programs(self, texts, engine):
        from rayflow.data.prox.generator import Generated

        return [Generated(self.chunk[t]) for t in texts]

    def count_tokens(self, texts, engine):
        return None


@pytest.mark.parametrize("semantics", ["strict", "reference"])
def test_stats_count_the_documents_the_other_semantics_decides_differently(tmp_path, semantics):
    texts = [DOC, DOC + "\nMore.", DOC + "\nEven more.", DOC + "\nLast."]
    generator = _Scripted(
        doc={
            texts[0]: "keep_doc()",
            texts[1]: "# drop?\nkeep_doc()",
            texts[2]: "keep_doc()",
            texts[3]: "keep_doc()",
        },
        chunk={
            texts[0]: "remove_lines(line_start=0, line_end=1)",  # both readings agree
            texts[1]: "keep_chunk()",
            texts[2]: "remove_lines(start=0, end=1)",  # strict: an error op, nothing removed
            texts[3]: "keep_chunk()",
        },
    )
    executor = ExecutorConfig(semantics=semantics)
    stage = EngineStage([DocLevel(generator, None, executor), ChunkLevel(generator, None, executor)])
    rows = stage(_batch(texts)).to_pylist()
    assert [(r["doc_semantics_differs"], r["chunk_semantics_differs"]) for r in rows] == [
        (False, False),
        (True, False),
        (False, True),
        (False, False),
    ]
    output = Output(str(tmp_path))
    output.prepare({"test": 1}, overwrite=False)
    output.write_rows(rows)
    stats = compute_stats(output)["semantics"]
    assert (stats["documents_decided_differently"], stats["doc_level"], stats["chunk_level"]) == (2, 1, 1)
