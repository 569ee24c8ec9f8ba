"""Assessment+: a multi-turn session probing a target model on Benchmark+ items, steered by a policy.

    store = SessionStore("sqlite:////abs/sessions.db")
    sid = store.create(session_spec(target={"base_url": ..., "model": ...}, items=items, turns=6,
                                    policy="learned", seed=0))
    result = await run_session(store, sid, target=threaded(target_engine), agent=threaded(agent_engine),
                               policy=load_policy("examples/agent/policy.json"), cfg=SessionConfig())

For each item, turn 0 asks its seed question; every later turn the policy picks a question type from the
state (`rayflow.agent.policy.State`), the examiner (the agent model) writes the question from the item's
strategy, the history and the type, the target answers with the last `history_turns` exchanges as its
conversation, and the rubric grader (the agent model) scores the answer on each criterion point. Each turn is
persisted when it finishes, so `run_session` on a stopped session continues from the turn after its last one;
the random stream of a turn depends only on (seed, item, turn), so a resumed session asks what an
uninterrupted one would. A grade that does not parse is counted (`parse_ok: false`) and the session goes on; a
prompt the target refuses ends that item; an engine that raises stops the session with status `error`
(running it again resumes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from rayflow.agent.benchmark import Item
from rayflow.agent.policy import SEED, State, turn_rng
from rayflow.agent.prompts import (
    FALLBACK_QUESTIONS,
    PROMPT_VERSION,
    examiner_prompt,
    grader_prompt,
    parse_grade,
    parse_question,
)
from rayflow.agent.scores import session_scores
from rayflow.agent.store import SessionStore
from rayflow.config import Config
from rayflow.llm import Engine, Generation, SamplingParams

log = logging.getLogger(__name__)


class SessionConfig(Config):
    """How a session runs its turns (the agent model writes questions and grades greedily)."""

    history_turns: int = Field(4, ge=0, description="earlier exchanges of the item the target sees")
    question_max_tokens: int = Field(64, ge=1, description="tokens of an examiner question")
    answer_max_tokens: int = Field(128, ge=1, description="tokens of a target answer")
    grade_max_tokens: int = Field(160, ge=1, description="tokens of a grader reply")
    target_temperature: float = Field(
        0.0, ge=0, description="the target's sampling temperature (seeded per turn)"
    )


def session_spec(target: dict, items: Sequence[Item], turns: int, policy: str, seed: int) -> dict[str, Any]:
    """What a session stores about itself: the target's description, its items, turns per item, policy, seed."""
    return {"target": target, "items": [i.model_dump() for i in items], "turns": turns, "policy": policy,
            "seed": seed, "prompt_version": PROMPT_VERSION}  # fmt: skip


def threaded(engine: Engine):
    """A `Generate` over a local or HTTP engine that runs its blocking calls off the event loop."""

    async def generate(prompts, params):
        return await asyncio.to_thread(engine.generate, list(prompts), params) if prompts else []

    return generate


async def _reply(generate, prompt, params: SamplingParams) -> tuple[str | None, str | None]:
    """(text, None), or (None, why) when the engine refused the prompt."""
    [out] = await generate([prompt], params)
    if isinstance(out, Generation):
        return out.text, None
    return None, out.reason


async def run_session(store: SessionStore, session_id: str, target, agent, policy, cfg: SessionConfig,
                      on_turn: Callable[[dict], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) a stored session to its end; returns the stored session with its scores. Never raises
    for a failing engine: the session's status says `error` and why."""
    session = store.get(session_id)
    if session is None:
        raise KeyError(session_id)
    spec = session["spec"]
    items = [Item.model_validate(i) for i in spec["items"]]
    done = store.turns(session_id)
    store.set_status(session_id, "running")
    try:
        for index, item in enumerate(items):
            mine = [t for t in done if t["item_index"] == index]
            if mine and mine[-1].get("ends_item"):
                continue
            async for record in _run_item(index, item, mine, spec, target, agent, policy, cfg):
                store.add_turn(session_id, record)
                if on_turn is not None:
                    on_turn(record)
    except Exception as err:
        log.exception("session %s stopped", session_id)
        store.set_status(session_id, "error", error=f"{type(err).__name__}: {err}")
        return store.get(session_id)
    store.set_status(session_id, "done", scores=session_scores(store.turns(session_id)))
    return store.get(session_id)


async def _run_item(
    index: int, item: Item, done: list[dict], spec: dict, target, agent, policy, cfg: SessionConfig
):
    """The remaining turns of one item, each yielded as a record when it finishes (the caller persists it)."""
    points = [p.text for p in item.criterion]
    history = [(t["question"], t["answer"]) for t in done]
    scores = [t["score"] for t in done if t["score"] is not None]
    types = [t["type"] for t in done]
    reached = [any((t["point_scores"][j] or 0) > 0 for t in done) for j in range(len(points))]
    for turn in range(len(done), spec["turns"]):
        state = State(turn, spec["turns"], list(scores), list(types), 1 - sum(reached) / len(points))
        qtype = SEED if turn == 0 else policy.choose(state, turn_rng(spec["seed"], index, turn))
        fallback = False
        if turn == 0:
            question = item.seed_question
        else:
            text, _ = await _reply(agent, examiner_prompt(item.topic, item.strategy, history, qtype),
                                   SamplingParams(max_tokens=cfg.question_max_tokens))  # fmt: skip
            question = parse_question(text or "")
            if question is None:
                fallback = True
                uncovered = [p for p, r in zip(points, reached) if not r] or points
                question = FALLBACK_QUESTIONS[qtype].format(seed=item.seed_question, topic=item.topic,
                                                            point=uncovered[0])  # fmt: skip
        conversation = [m for q, a in history[-cfg.history_turns :] if cfg.history_turns
                        for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]  # fmt: skip
        answer, refused = await _reply(
            target, [*conversation, {"role": "user", "content": question}],
            SamplingParams(max_tokens=cfg.answer_max_tokens, temperature=cfg.target_temperature,
                           seed=(spec["seed"] * 1_000_003 + index * 1009 + turn) % 2**63),
        )  # fmt: skip
        record = {"item_index": index, "item_id": item.id, "topic": item.topic, "turn": turn, "type": qtype,
                  "question": question, "examiner_fallback": fallback, "answer": answer or "",
                  "state": state.features().round(6).tolist()}  # fmt: skip
        if refused is not None:
            yield {**record, "point_scores": [None] * len(points), "reasons": [""] * len(points), "score": None,
                   "parse_ok": True, "error": f"the target refused: {refused}", "ends_item": True}  # fmt: skip
            return
        grade, _ = await _reply(agent, grader_prompt(question, answer, points),
                                SamplingParams(max_tokens=cfg.grade_max_tokens))  # fmt: skip
        point_scores, reasons = parse_grade(grade or "", len(points))
        graded = [s for s in point_scores if s is not None]
        score = sum(graded) / len(graded) if graded else None
        yield {**record, "point_scores": point_scores, "reasons": reasons, "score": score,
               "parse_ok": len(graded) == len(points), "grader_output": (grade or "")[:2000], "error": None,
               "ends_item": turn == spec["turns"] - 1}  # fmt: skip
        history.append((question, answer))
        types.append(qtype)
        if score is not None:
            scores.append(score)
        reached = [r or (s or 0) > 0 for r, s in zip(reached, point_scores)]
