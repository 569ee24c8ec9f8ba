"""A pairwise LLM judge reached through the engine layer: which of two answers to a question is better.

The prompt asks for MT-bench's verdict format (`[[A]]`, `[[B]]`, `[[C]]` for a tie), read with
`rayflow.eval.alignment.parse_pairwise_verdict`. Two ways to get the verdict:

- `generate`: the judge writes its reasoning and a verdict (greedy); an output without a verdict is None and
  its game is skipped, as MT-bench and Arena-Hard do. Use it with instruction-following judges.
- `logprob`: the judge *scores* the three verdict strings after the prompt (`Engine.score`) and the most likely
  one is the verdict. Every game gets a verdict, which makes it the choice for small or un-tuned judges (and
  the offline tiny-model config). The scores also give a soft preference, P(A) + ½·P(tie) with the three
  strings' probabilities renormalised to sum to 1, in the spirit of AlpacaEval's log-prob weighted judge.

Position bias is handled by the caller, which judges every pair in both orders. A game whose prompt the judge's
engine refuses (`PromptRejected`, e.g. longer than its context) gets no verdict, like an unreadable one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from rayflow.config import Config
from rayflow.eval.alignment import parse_pairwise_verdict
from rayflow.llm import Engine, EngineConfig, PromptRejected, SamplingParams

JUDGE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. Choose the assistant that follows the user's "
    "instructions and answers the question better, considering helpfulness, relevance, accuracy and level "
    "of detail. Do not let the order in which the responses are presented, their length, or the assistants' "
    "names influence you. After a short explanation, output your final verdict strictly in this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)

_CANDIDATES = {"[[A]]": "A>B", "[[B]]": "B>A", "[[C]]": "A=B"}


class JudgeConfig(Config):
    """The judge model and how its verdict is read."""

    engine: EngineConfig = EngineConfig(backend="hf", model="tiny:small", dtype="float32")
    mode: Literal["generate", "logprob"] = Field(
        "generate", description="generate: parse [[A]]/[[B]]/[[C]]; logprob: most likely verdict string"
    )
    max_tokens: int = Field(512, ge=1, description="generate mode: judge output length")


def judge_prompt(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """Chat messages asking the judge to compare answer A with answer B."""
    user = (
        f"[User Question]\n{question}\n\n"
        f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
        f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def judge_pairs(
    engine: Engine,
    cfg: JudgeConfig,
    questions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
) -> tuple[list[str | None], list[str], list[float | None]]:
    """Per question, answer A vs answer B: verdicts (`rayflow.eval.alignment.VERDICTS` strings, or None when
    unreadable or refused), the judge's raw outputs (in `logprob` mode, the winning verdict string; for a refused
    prompt, `rejected: <reason>`), and A's soft preference in [0, 1] (`logprob` mode; None in `generate` mode
    and for refused prompts)."""
    if not (len(questions) == len(answers_a) == len(answers_b)):
        raise ValueError("questions, answers_a and answers_b must have the same length")
    prompts = [judge_prompt(q, a, b) for q, a, b in zip(questions, answers_a, answers_b)]
    if not prompts:
        return [], [], []
    if cfg.mode == "generate":
        gens = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens))
        raw = [_rejected(g) if isinstance(g, PromptRejected) else g.text for g in gens]
        verdicts = [None if isinstance(g, PromptRejected) else parse_pairwise_verdict(g.text) for g in gens]
        return verdicts, raw, [None] * len(gens)
    candidates = list(_CANDIDATES)
    scored = engine.score([p for p in prompts for _ in candidates], [c for _ in prompts for c in candidates])
    verdicts, raw, prefs = [], [], []
    for i in range(len(prompts)):
        game = scored[i * len(candidates) : (i + 1) * len(candidates)]
        refused = next((s for s in game if isinstance(s, PromptRejected)), None)
        if refused is not None:
            verdicts.append(None)
            raw.append(_rejected(refused))
            prefs.append(None)
            continue
        sums = [g.sum for g in game]
        best = candidates[max(range(len(candidates)), key=lambda j: sums[j])]
        verdicts.append(_CANDIDATES[best])
        raw.append(best)
        prefs.append(_preference_a(dict(zip(candidates, sums))))
    return verdicts, raw, prefs


def _preference_a(logprobs: dict[str, float]) -> float:
    """P(A better) + ½·P(tie), the verdict strings' probabilities renormalised over the three."""
    top = max(logprobs.values())
    prob = {c: math.exp(v - top) for c, v in logprobs.items()}
    return (prob["[[A]]"] + 0.5 * prob["[[C]]"]) / sum(prob.values())


def _rejected(refusal: PromptRejected) -> str:
    return f"rejected: {refusal.reason}"
