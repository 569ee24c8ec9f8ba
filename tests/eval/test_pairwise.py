"""The pairwise judge: prompt layout, verdict parsing (fake engine: parsing only) and the log-prob mode on a
real tiny model through the HF backend."""

from rayflow.llm import EngineConfig, Generation, build_engine
from rayflow.eval.pairwise import JudgeConfig, judge_pairs, judge_prompt


class ScriptedEngine:
    """Answers `generate` with fixed texts; for testing how verdicts are read, nothing else."""

    def __init__(self, texts):
        self.texts, self.prompts = list(texts), []

    def generate(self, prompts, params=None):
        self.prompts.extend(prompts)
        return [Generation(text=t, token_ids=[1], finish_reason="stop") for t in self.texts[: len(prompts)]]


def test_prompt_puts_answers_in_their_positions():
    msgs = judge_prompt("What is 2+2?", "four", "five")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[[A]]" in msgs[0]["content"] and "[[C]]" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.index("What is 2+2?") < user.index("four") < user.index("five")
    assert "Assistant A's Answer]\nfour" in user and "Assistant B's Answer]\nfive" in user


def test_generate_mode_parses_verdicts_and_skips_unreadable_ones():
    engine = ScriptedEngine(["A is better. [[A]]", "Tie [[C]]", "I like B: [[B]]", "no verdict here"])
    verdicts, raw = judge_pairs(
        engine, JudgeConfig(mode="generate"), ["q1", "q2", "q3", "q4"], ["a"] * 4, ["b"] * 4
    )
    assert verdicts == ["A>B", "A=B", "B>A", None]
    assert raw[3] == "no verdict here" and len(engine.prompts) == 4
    assert judge_pairs(engine, JudgeConfig(mode="generate"), [], [], []) == ([], [])


def test_logprob_mode_picks_the_most_likely_verdict_string(tiny_model):
    engine = build_engine(EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"))
    try:
        cfg = JudgeConfig(mode="logprob")
        questions = ["Tell me what Ivy did at the market.", "Tell me what Tom did at the park."]
        verdicts, raw = judge_pairs(engine, cfg, questions, ["Sure. Ivy went.", "No."], ["No.", "Sure. Tom."])
        assert all(r in ("[[A]]", "[[B]]", "[[C]]") for r in raw)
        assert verdicts == [{"[[A]]": "A>B", "[[B]]": "B>A", "[[C]]": "A=B"}[r] for r in raw]
        # It is the argmax of the engine's own scores for the three candidates.
        prompt = judge_prompt(questions[0], "Sure. Ivy went.", "No.")
        sums = [s.sum for s in engine.score([prompt] * 3, ["[[A]]", "[[B]]", "[[C]]"])]
        assert raw[0] == ["[[A]]", "[[B]]", "[[C]]"][sums.index(max(sums))]
    finally:
        engine.close()
