"""The post-sweep evaluation stage on real tiny models through the HF backend (no Ray)."""

import json

import pytest

from rayflow.eval.pairwise import JudgeConfig
from rayflow.llm import EngineConfig, SamplingParams
from rayflow.tune import evaluation
from rayflow.tune.evaluation import BASELINE, EvalConfig, evaluate_models, question_text

# Plain prompts and chat prompts, as the eval split holds both.
PROMPTS = [f"Tell me what {n} did at the park." for n in ("Umar", "Sam", "Julia", "Mira")] + [
    [{"role": "user", "content": f"Tell me what {n} did at the market."}]
    for n in ("Leo", "Ivy", "Noor", "Eli")
]


def test_win_rates_use_soft_preferences_when_every_game_has_one():
    rows = [
        {"model_first": "A>B", "model_second": "A>B", "prob_first": 0.9, "prob_second": 0.6,
         "model_chars": 10, "sft_chars": 10},
        {"model_first": "B>A", "model_second": None, "prob_first": 0.3, "prob_second": None,
         "model_chars": 10, "sft_chars": 10},
    ]  # fmt: skip
    soft = evaluation._win_rates(rows, EvalConfig(lc_min_samples=2))
    assert soft["preferences"] == "soft" and soft["win_rate"] == pytest.approx((0.9 + 0.4 + 0.3) / 3)
    hard = evaluation._win_rates(rows, EvalConfig(lc_min_samples=2, soft_preferences=False))
    assert hard["preferences"] == "hard" and hard["win_rate"] == pytest.approx(1 / 3)
    # Judgements written without probabilities (generate mode, or before they were kept) are read as verdicts.
    old = [{k: v for k, v in r.items() if not k.startswith("prob_")} for r in rows]
    assert evaluation._win_rates(old, EvalConfig(lc_min_samples=2))["preferences"] == "hard"


def test_question_text():
    assert question_text("plain") == "plain"
    chat = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    assert question_text(chat) == "hi"


def test_each_model_then_the_judge_and_a_rerun_reuses_everything(tiny_models, tmp_path, monkeypatch):
    built = []
    real_build = evaluation.build_engine

    def counting_build(cfg):
        built.append(cfg.model)
        return real_build(cfg)

    monkeypatch.setattr(evaluation, "build_engine", counting_build)
    cfg = EvalConfig(
        sampling=SamplingParams(temperature=0.0, max_tokens=12),
        judge=JudgeConfig(
            engine=EngineConfig(backend="hf", model=str(tiny_models["tiny"]), dtype="float32"), mode="logprob"
        ),
        lc_min_samples=16,  # 8 prompts x 2 positions
    )
    models = {"same": str(tiny_models["tiny"]), "other": str(tiny_models["small"])}
    out = tmp_path / "eval"
    metrics = evaluate_models(models, str(tiny_models["tiny"]), PROMPTS, cfg, str(out))

    # One engine at a time, in order: SFT, each trial, then the judge once.
    assert built == [
        str(tiny_models["tiny"]),
        str(tiny_models["tiny"]),
        str(tiny_models["small"]),
        str(tiny_models["tiny"]),
    ]
    assert set(metrics) == {BASELINE, "same", "other"}
    for name in metrics:
        m = metrics[name]
        assert 0 < m["gen_length"] <= 12 and 0 <= m["repetition"] <= 1 and 0 <= m["hit_max_tokens"] <= 1
        assert len((out / "generations" / f"{name}.jsonl").read_text().splitlines()) == len(PROMPTS)
    # The SFT model against itself: identical answers, so each prompt's two games (positions swapped) get the
    # same judge prompt and verdict, one game a win and the other a loss (or both ties): exactly 0.5.
    same = metrics["same"]
    assert same["win_rate"] == pytest.approx(0.5) and same["judged_games"] == 2 * len(PROMPTS)
    assert same["lc_win_rate"] == pytest.approx(0.5, abs=1e-6)  # equal lengths: LC = raw win rate
    other = metrics["other"]
    assert 0 <= other["win_rate"] <= 1 and other["lc_win_rate"] is not None
    games = [json.loads(line) for line in (out / "judgements" / "other.jsonl").read_text().splitlines()]
    assert len(games) == len(PROMPTS) and games[4]["question"] == "Tell me what Leo did at the market."
    # The log-prob judge gives probabilities, so the rates are on soft preferences: the model's mean over games.
    assert other["preferences"] == same["preferences"] == "soft"
    soft = [g["prob_first"] for g in games] + [1 - g["prob_second"] for g in games]
    assert other["win_rate"] == pytest.approx(sum(soft) / len(soft))

    # A rerun (e.g. after an interrupted sweep) builds no engine and gives the same numbers.
    built.clear()
    assert evaluate_models(models, str(tiny_models["tiny"]), PROMPTS, cfg, str(out)) == metrics
    assert built == []


def test_a_refused_prompt_is_recorded_and_skipped_and_few_games_give_no_lc_win_rate(tiny_model, tmp_path):
    cfg = EvalConfig(
        max_prompts=3,
        max_model_len=64,  # the middle prompt does not fit
        sampling=SamplingParams(temperature=0.0, max_tokens=4),
        judge=JudgeConfig(
            engine=EngineConfig(backend="hf", model=str(tiny_model), dtype="float32"), mode="logprob"
        ),
    )
    prompts = [PROMPTS[0], "Tell me a story. " * 40, PROMPTS[1], PROMPTS[2]]
    metrics = evaluate_models({"t": str(tiny_model)}, str(tiny_model), prompts, cfg, str(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "generations" / "t.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and "error" in rows[1] and not any("error" in r for r in rows[::2])
    # Two answered prompts, each judged in both positions; too few games for the length-controlled rate.
    t = metrics["t"]
    assert t["rejected_prompts"] == 1 and t["judged_games"] == 4 and t["lc_win_rate"] is None
    assert t["hit_max_tokens"] == pytest.approx(sum(r["finish_reason"] == "length" for r in rows[::2]) / 2)
    games = [json.loads(line) for line in (tmp_path / "judgements" / "t.jsonl").read_text().splitlines()]
    assert [g["question"] for g in games] == [PROMPTS[0], PROMPTS[1]]
