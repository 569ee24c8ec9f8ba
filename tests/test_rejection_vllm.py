"""One prompt vLLM refuses (longer than its context) in the middle of a batch costs only its own row, in every
workflow that runs on the engine stage: batch generation, ProX `lm`, reference precompute and the safety
judge. One vLLM engine for the module; each test compares the other rows with an unbatched run."""

import json

import pyarrow as pa
import pytest

from rayflow.data.engine_stage import EngineStage
from rayflow.data.generate import GenerateTask
from rayflow.data.prox.lm import LMConfig, LMGenerator
from rayflow.data.prox.reader import READ_SCHEMA
from rayflow.data.prox.stage import DocLevel
from rayflow.eval.safety.label_eval import EvalSafetyConfig, JudgeTask
from rayflow.llm import EngineConfig, SamplingParams
from rayflow.train.precompute import ScoreTask
from tests.conftest import in_process_vllm

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CONTEXT = 512
LONG = "word " * 700  # ~700 tokens: over the context on its own
SAMPLING = SamplingParams(max_tokens=6)


@pytest.fixture(scope="module")
def stage(tiny_model):
    """The generation stage as an actor would hold it; its engine serves the other three tests too."""
    cfg = EngineConfig(backend="vllm", model=str(tiny_model), dtype="float32", max_model_len=CONTEXT)
    with in_process_vllm():  # the real engine without its worker processes: starts in seconds
        stage = EngineStage([GenerateTask(cfg, SAMPLING)])
    yield stage
    stage.close()


@pytest.fixture(scope="module")
def engine(stage):
    return stage.engines[0]


def test_batch_generation(stage, engine):
    lines = [json.dumps({"id": "a", "prompt": "The cat"}), json.dumps({"id": "long", "prompt": LONG}),
             json.dumps({"id": "c", "prompt": [{"role": "user", "content": "Hi"}]})]  # fmt: skip
    rows = stage(pa.table({"text": lines})).to_pylist()
    assert [r["id"] for r in rows] == ["a", None, "c"]
    assert "engine rejected the prompt" in rows[1]["error"] and str(CONTEXT) in rows[1]["error"]
    alone = [stage(pa.table({"text": [line]})).to_pylist()[0] for line in (lines[0], lines[2])]
    assert [rows[0], rows[2]] == alone and all(
        r["error"] is None and r["num_generated_tokens"] for r in alone
    )


class ContextNotConfigured:
    """The shared engine as ProX sees a server whose context length it was not told (an OpenAI endpoint
    without `max_model_len`): ProX cannot cut its prompts to fit, so the engine itself must refuse the long one."""

    def __init__(self, engine):
        self.engine, self.tokenizer = engine, engine.tokenizer
        self.config = engine.config.model_copy(update={"max_model_len": None})

    def generate(self, prompts, params):
        return self.engine.generate(prompts, params)


def test_prox_lm_doc_level(engine):
    texts = ["Bees build combs of wax.\nThey dance.", LONG, "Coffee is brewed with hot water."]
    rows = [{"id": f"d{i}", "text": t, "source": "s.jsonl", "row": i, "error": None, "reason": "", "raw": "",
             "extra": "{}"} for i, t in enumerate(texts)]  # fmt: skip
    rows = pa.Table.from_pylist(rows, schema=READ_SCHEMA).to_pylist()
    level = DocLevel(LMGenerator(LMConfig(doc_max_tokens=6)), None)
    seen = ContextNotConfigured(engine)
    level(rows, seen)
    assert rows[1]["error"] == "generation_failed" and "rejected" in rows[1]["reason"]
    assert rows[1]["reason"].startswith("row 1: doc program")
    for row in (rows[0], rows[2]):
        alone = [{**row, "error": None, "reason": "", "raw": ""}]
        level(alone, seen)
        assert row["error"] is None and row["doc_prompt_tokens"] > 0
        assert (row["doc_program"], row["doc_keep"]) == (alone[0]["doc_program"], alone[0]["doc_keep"])


def test_reference_precompute_scoring(engine):
    tok = engine.tokenizer
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    rows = [
        {"idx": 0, "prompt_ids": ids("The sky is"), "chosen_ids": ids(" blue"), "rejected_ids": ids(" red")},
        {"idx": 1, "prompt_ids": ids(LONG), "chosen_ids": ids(" yes"), "rejected_ids": ids(" no")},
        {
            "idx": 2,
            "prompt_ids": ids("Two and two"),
            "chosen_ids": ids(" make four"),
            "rejected_ids": ids(" five"),
        },
    ]
    ScoreTask(engine.config, has_rejected=True)(rows, engine)
    assert rows[1]["error"] and rows[1]["chosen_tokens"] == []
    for row in (rows[0], rows[2]):
        chosen, rejected = engine.score([row["prompt_ids"]] * 2, [row["chosen_ids"], row["rejected_ids"]])
        assert row["error"] is None
        assert row["chosen_tokens"] == pytest.approx(chosen.logprobs, abs=1e-5)
        assert row["rejected_tokens"] == pytest.approx(rejected.logprobs, abs=1e-5)


def test_safety_judge(engine):
    cfg = EvalSafetyConfig(engine=engine.config, scheme="shieldlm")
    rows = [{"id": str(i), "lang": "en", "query": q, "response": "I cannot help with that.", "label": "safe",
             "source": "x.jsonl", "line": i} for i, q in enumerate(["How do I bake bread?", LONG, "Hello"])]  # fmt: skip
    task = JudgeTask(cfg)
    task(rows, engine)
    assert rows[1]["error"] and rows[1]["pred"] == "unknown"
    for row in (rows[0], rows[2]):
        alone = [dict(row)]
        task(alone, engine)
        assert row["error"] is None and row["prompt_version"] == "shieldlm/v1"
        assert (row["raw_output"], row["pred"]) == (alone[0]["raw_output"], alone[0]["pred"])
