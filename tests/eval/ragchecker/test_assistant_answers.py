"""CI evaluates a saved batch of the research assistant's answers with eval_rag end to end.

examples/ragchecker/assistant_answers.jsonl holds `POST /assistant/v1/query` answers from the deployed assistant
(serve/config.yaml's model and settings, tiny model) to the shipped QA set's first questions, with the QA
set's `gt_answer`; examples/ragchecker/make_assistant_answers.py regenerates it. The file is checked to be
the assistant's own output format and current prompts, then evaluated unchanged on Ray Data with the tiny
model: every metric, every item, the citations kept."""

import json

import pytest

from rayflow.config import load_config
from rayflow.eval.ragchecker import compute_metrics
from rayflow.eval.ragchecker.workflow import EvalRagConfig, run
from rayflow.rag import PROMPT_VERSION, AssistantAnswer
from tests.conftest import REPO

SAVED = REPO / "examples/ragchecker/assistant_answers.jsonl"
ANSWERS = [json.loads(line) for line in SAVED.read_text().splitlines() if line.strip()]


def test_the_saved_batch_is_the_assistants_answers_with_the_qa_ground_truth():
    qa = [json.loads(line) for line in (REPO / "examples/papers/qa.jsonl").read_text().splitlines()]
    assert [a["query_id"] for a in ANSWERS] == [q["query_id"] for q in qa[: len(ANSWERS)]] and len(ANSWERS) >= 8
    for saved, question in zip(ANSWERS, qa):
        body = {k: v for k, v in saved.items() if k != "gt_answer"}
        answer = AssistantAnswer.model_validate(body)
        assert answer.model_dump(mode="json") == body  # exactly the /v1/query body, nothing added or lost
        assert answer.prompt_version == PROMPT_VERSION, "prompts changed: rerun make_assistant_answers.py"
        assert (answer.query, saved["gt_answer"]) == (question["query"], question["gt_answer"])
        assert answer.route == "retrieve" and answer.retrieved_context and answer.trace
    assert any(a["citations"] for a in ANSWERS)


@pytest.mark.slow
def test_eval_rag_evaluates_the_saved_answers_end_to_end(ray_session, tmp_path):
    overrides = [f"input_path={SAVED}", f"output_dir={tmp_path}", "stage.cpus_per_actor=0.5"]
    result = run(load_config(EvalRagConfig, REPO / "configs/eval_rag.yaml", overrides))
    assert (result.summary["items_in"], result.summary["evaluated"], result.summary["errors"]) == (8, 8, 0)
    checked = json.loads((tmp_path / "results.json").read_text())
    results = checked["results"]
    assert [r["query_id"] for r in results] == [a["query_id"] for a in ANSWERS]
    for r, saved in zip(results, ANSWERS):
        assert (r["response"], r["gt_answer"], r["citations"]) == (saved["response"], saved["gt_answer"],
                                                                   saved["citations"])  # fmt: skip
        assert len(r["answer2response"]) == len(r["response_claims"])
        assert len(r["response2answer"]) == len(r["gt_answer_claims"])
        assert all(len(row) == len(r["retrieved_context"]) for row in r["retrieved2response"] + r["retrieved2answer"])
    assert checked["metrics"] == result.summary["metrics"] == compute_metrics(results)
    assert set(checked["metrics"]["generator_metrics"]) >= {"faithfulness", "hallucination", "self_knowledge"}
    assert (tmp_path / "metrics.png").stat().st_size > 5000 and "faithfulness" in (tmp_path / "report.md").read_text()
