"""The pairwise judge: prompt layout, verdict parsing (fake engine: parsing only) and the log-prob mode on a
real tiny model through the HF backend."""

import math

import numpy as np
import pytest

from rayflow.eval.pairwise import JudgeConfig, judge_pairs, judge_prompt
from rayflow.llm import EngineConfig, Generation, PromptRejected, Scored, build_engine


class ScriptedEngine:
    """Answers `generate` with fixed texts (a `PromptRejected` stands for itself) and `score` with fixed sums;
    for testing how verdicts are read, nothing else."""

    def __init__(self, texts=(), sums=()):
        self.texts, self.sums, self.prompts = list(texts), list(sums), []

    def generate(self, prompts, params=None):
        self.prompts.extend(prompts)
        return [
            t if isinstance(t, PromptRejected) else Generation(text=t, token_ids=[1], finish_reason="stop")
            for t in self.texts[: len(prompts)]
        ]

    def score(self, prompts, completions):
        return [
            s if isinstance(s, PromptRejected) else Scored(prompt_len=1, token_ids=[1], logprobs=[s])
            for s in self.sums[: len(prompts)]
        ]


def test_prompt_puts_answers_in_their_positions():
    msgs = judge_prompt("What is 2+2?", "four", "five")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[[A]]" in msgs[0]["content"] and "[[C]]" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.index("What is 2+2?") < user.index("four") < user.index("five")
    assert "Assistant A's Answer]\nfour" in user and "Assistant B's Answer]\nfive" in user


def test_generate_mode_parses_verdicts_and_skips_unreadable_ones():
    engine = ScriptedEngine(["A is better. [[A]]", "Tie [[C]]", "I like B: [[B]]", "no verdict here"])
    verdicts, raw, prefs = judge_pairs(
        engine, JudgeConfig(mode="generate"), ["q1", "q2", "q3", "q4"], ["a"] * 4, ["b"] * 4
    )
    assert (
        verdicts == ["A>B", "A=B", "B>A", None] and prefs == [None] * 4
    )  # a written verdict has no probability
    assert raw[3] == "no verdict here" and len(engine.prompts) == 4
    assert judge_pairs(engine, JudgeConfig(mode="generate"), [], [], []) == ([], [], [])


def test_a_refused_game_gets_no_verdict_and_the_others_go_on():
    too_long = PromptRejected(reason="prompt is 9000 tokens, the context 2048")
    engine = ScriptedEngine(texts=["[[B]]", too_long, "[[A]]"])
    verdicts, raw, _ = judge_pairs(engine, JudgeConfig(mode="generate"), ["q"] * 3, ["a"] * 3, ["b"] * 3)
    assert verdicts == ["B>A", None, "A>B"] and raw[1] == f"rejected: {too_long.reason}"
    # logprob mode: three scored verdict strings per game; one refusal voids that game only.
    engine = ScriptedEngine(sums=[-3.0, -1.0, -2.0, too_long, too_long, too_long, -0.5, -4.0, -0.2])
    verdicts, raw, prefs = judge_pairs(engine, JudgeConfig(mode="logprob"), ["q"] * 3, ["a"] * 3, ["b"] * 3)
    assert verdicts == ["B>A", None, "A=B"] and raw == ["[[B]]", f"rejected: {too_long.reason}", "[[C]]"]
    assert prefs[1] is None


def test_soft_preference_from_verdict_log_probs():
    # P(A), P(B), P(tie) = 0.5, 0.2, 0.3 (up to a common factor, which the renormalisation removes).
    sums = [math.log(0.5) - 2, math.log(0.2) - 2, math.log(0.3) - 2]
    engine = ScriptedEngine(sums=sums + sums[::-1])
    verdicts, _, prefs = judge_pairs(engine, JudgeConfig(mode="logprob"), ["q"] * 2, ["a"] * 2, ["b"] * 2)
    assert verdicts == ["A>B", "A=B"]
    assert prefs[0] == pytest.approx(0.5 + 0.15) and prefs[1] == pytest.approx(0.3 + 0.25)


def test_logprob_mode_picks_the_most_likely_verdict_string(tiny_model):
    engine = build_engine(EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"))
    try:
        cfg = JudgeConfig(mode="logprob")
        questions = ["Tell me what Ivy did at the market.", "Tell me what Tom did at the park."]
        verdicts, raw, prefs = judge_pairs(
            engine, cfg, questions, ["Sure. Ivy went.", "No."], ["No.", "Sure. Tom."]
        )
        assert all(r in ("[[A]]", "[[B]]", "[[C]]") for r in raw)
        assert verdicts == [{"[[A]]": "A>B", "[[B]]": "B>A", "[[C]]": "A=B"}[r] for r in raw]
        # It is the argmax of the engine's own scores for the three candidates, and the soft preference is
        # their probabilities renormalised: P(A) + P(tie) / 2.
        prompt = judge_prompt(questions[0], "Sure. Ivy went.", "No.")
        sums = [s.sum for s in engine.score([prompt] * 3, ["[[A]]", "[[B]]", "[[C]]"])]
        assert raw[0] == ["[[A]]", "[[B]]", "[[C]]"][sums.index(max(sums))]
        probs = np.exp(np.array(sums) - max(sums))
        assert prefs[0] == pytest.approx((probs[0] + 0.5 * probs[2]) / probs.sum(), abs=1e-9)
    finally:
        engine.close()
