"""Regenerate examples/ragchecker/assistant_answers.jsonl: the research assistant's answers to the first questions
of the shipped papers' QA set, saved as `POST /assistant/v1/query` returns them, with the QA set's `gt_answer`
added, so that RAGChecker (`jobs/eval_rag.py`) evaluates them unchanged.

    python examples/ragchecker/make_assistant_answers.py [--n 8]

The assistant is the one `serve/config.yaml` deploys: its `assistant` application's model (rayflow's tiny model,
hf backend), flow settings and index settings, over the whole shipped corpus (examples/papers/papers.jsonl),
through the same `rayflow.rag.answer` the app's /v1/query calls. The tiny model's words are noise; the answers
are real runs of the flow (retrieval, citations, trace), which is what the evaluation is exercised on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from rayflow.eval.safety.llm import from_engine  # noqa: E402
from rayflow.llm import EngineConfig, build_engine  # noqa: E402
from rayflow.rag import AssistantConfig, answer  # noqa: E402
from rayflow.rag.searcher import IndexSearcher, SearchConfig, read_documents  # noqa: E402

OUT = REPO / "examples/ragchecker/assistant_answers.jsonl"


def app_args() -> dict:
    """The `assistant` application's args in serve/config.yaml."""
    config = yaml.safe_load((REPO / "serve/config.yaml").read_text())
    return next(app for app in config["applications"] if app["name"] == "assistant")["args"]


async def answer_all(questions: list[dict]) -> list[dict]:
    """Each QA item answered by the deployed assistant's flow: the /v1/query body plus its `gt_answer`."""
    args = app_args()
    searcher = IndexSearcher(SearchConfig(**args["search"]))
    searcher.add(read_documents(REPO / args["corpus"]))
    engine = build_engine(EngineConfig(**args["llm"]["engine"]))
    generate, config = from_engine(engine), AssistantConfig(**args["assistant"])
    saved = []
    try:
        for qa in questions:
            result = await answer(qa["query"], generate, searcher, config, query_id=qa["query_id"])
            saved.append({**result.model_dump(mode="json"), "gt_answer": qa["gt_answer"]})
            print(f"{qa['query_id']}: {result.route}, {len(result.citations)} citation(s)", file=sys.stderr)
    finally:
        engine.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="questions answered (the QA set's first n)")
    n = parser.parse_args().n
    lines = (REPO / "examples/papers/qa.jsonl").read_text().splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][:n]
    saved = asyncio.run(answer_all(questions))
    OUT.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in saved), encoding="utf-8")
    print(f"{len(saved)} answers -> {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
