"""The post-sweep evaluation stage: each trial's final model, then one judge, one engine at a time.

Runs after every trial has finished (never inside a trial), so a sweep's trials keep their CPUs/GPUs for
training and the machine never holds two engines. For the starting (SFT) model and then each trial's exported
model in turn: build an engine, generate greedy answers to the held-out prompts, record length and repetition,
close the engine. Then the judge is loaded once and compares every trial's answers with the SFT model's, each
pair in both orders (position swap; a tie counts half), giving the win rate and, with enough games, the
length-controlled win rate (`rayflow.eval.alignment`: AlpacaEval 2's GLM on the length difference; held-out
prompts have no AlpacaEval instruction difficulty, so it runs without that term and the gamed-baseline
regularisation). When the judge gives probabilities (`logprob` mode) and `soft_preferences` is on, both rates
use the soft preference P(win) + ½·P(tie) per game, as AlpacaEval's weighted judge does.

A prompt a model's engine refuses (`PromptRejected`) is kept as a row with its `error`; it counts in no
metric, and its games are not judged. Generations and verdicts are written under `eval/` as they are made; a rerun (e.g. after an interruption)
reuses them, so an evaluation stage never redoes finished work.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rayflow.config import Config
from rayflow.eval.alignment import length_controlled_win_rate, pairwise_win_rate
from rayflow.eval.pairwise import JudgeConfig, judge_pairs
from rayflow.llm import EngineConfig, PromptRejected, SamplingParams, build_engine
from rayflow.tune.degeneration import repetition_rate

BASELINE = "sft"

Prompt = str | list[dict[str, str]]


class EvalConfig(Config):
    """The post-sweep evaluation stage."""

    enabled: bool = Field(True, description="run the stage after the trials")
    max_prompts: int = Field(64, ge=1, description="held-out prompts to answer (the sweep's eval split)")
    backend: Literal["hf", "vllm"] = Field("hf", description="engine backend for the policies")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="weights' dtype of the policies' engines"
    )
    max_model_len: int | None = Field(None, description="policies' context, tokens; None = the model's own")
    sampling: SamplingParams = SamplingParams(temperature=0.0, max_tokens=128)
    judge: JudgeConfig = JudgeConfig()
    repetition_ngram: int = Field(4, ge=1, description="n of the n-gram repetition rate")
    max_repetition: float = Field(0.5, gt=0, le=1, description="degenerate above this mean repetition rate")
    max_length_ratio: float = Field(
        2.0, gt=1, description="degenerate above this multiple of the SFT mean length"
    )
    lc_min_samples: int = Field(20, ge=2, description="games needed for the length-controlled win rate")
    soft_preferences: bool = Field(
        True,
        description="use the judge's probabilities (logprob mode) for the win rates instead of its verdicts",
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs of the Ray task that runs the stage")
    num_gpus: float = Field(0.0, ge=0, description="GPUs of the Ray task that runs the stage")


def question_text(prompt: Prompt) -> str:
    """What the judge sees as the question: the text, or the chat's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else str(prompt[-1]["content"])


def evaluate_models(
    models: dict[str, str], baseline_model: str, prompts: Sequence[Prompt], cfg: EvalConfig, out_dir: str
) -> dict[str, dict[str, Any]]:
    """Evaluate each `{trial_id: model_dir}` against `baseline_model` on `prompts`; writes under `out_dir`.

    Returns `{name: metrics}` for the baseline (`"sft"`) and every trial: `gen_length` (mean new tokens),
    `gen_chars`, `repetition` (mean n-gram repetition rate), `hit_max_tokens` (share cut at the limit), all over
    the prompts the model's engine did not refuse, `rejected_prompts` (how many it refused), and for
    trials `win_rate`, `lc_win_rate` (None below `lc_min_samples` games), `preferences` (`soft` or `hard`: what
    both rates were computed from), `judge_consistency`, `judged_games`.
    """
    out = Path(out_dir)
    prompts = list(prompts)[: cfg.max_prompts]
    answers = {
        name: _generations(name, path, prompts, cfg, out / "generations")
        for name, path in {BASELINE: baseline_model, **models}.items()
    }
    metrics = {name: _generation_metrics(gens, cfg) for name, gens in answers.items()}
    judged = {name: out / "judgements" / f"{name}.jsonl" for name in models}
    todo = [name for name, path in judged.items() if not path.is_file()]
    if todo:
        judge = build_engine(cfg.judge.engine)
        try:
            for name in todo:
                _judge_trial(judge, cfg.judge, prompts, answers[name], answers[BASELINE], judged[name])
        finally:
            _release(judge)
    for name, path in judged.items():
        metrics[name].update(_win_rates([json.loads(line) for line in path.read_text().splitlines()], cfg))
    return metrics


def _generations(
    name: str, model: str, prompts: list[Prompt], cfg: EvalConfig, out: Path
) -> list[dict[str, Any]]:
    path = out / f"{name}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines()]
    engine = build_engine(
        EngineConfig(backend=cfg.backend, model=model, dtype=cfg.dtype, max_model_len=cfg.max_model_len)
    )
    try:
        gens = engine.generate(prompts, cfg.sampling)
    finally:
        _release(engine)
    rows = [
        {"prompt": p, "text": "", "token_ids": [], "finish_reason": None, "error": g.reason}
        if isinstance(g, PromptRejected)
        else {"prompt": p, "text": g.text, "token_ids": g.token_ids, "finish_reason": g.finish_reason}
        for p, g in zip(prompts, gens)
    ]
    _write_jsonl(path, rows)
    return rows


def _generation_metrics(rows: list[dict[str, Any]], cfg: EvalConfig) -> dict[str, Any]:
    gens = [g for g in rows if "error" not in g]
    n = max(1, len(gens))
    return {
        "rejected_prompts": len(rows) - len(gens),
        "gen_length": sum(len(g["token_ids"]) for g in gens) / n,
        "gen_chars": sum(len(g["text"]) for g in gens) / n,
        "repetition": sum(repetition_rate(g["token_ids"], cfg.repetition_ngram) for g in gens) / n,
        "hit_max_tokens": sum(g["finish_reason"] == "length" for g in gens) / n,
    }


def _judge_trial(judge, cfg: JudgeConfig, prompts, model_answers, sft_answers, path: Path) -> None:
    # Only games where both models answered are judged.
    games = [
        (question_text(p), m["text"], t["text"])
        for p, m, t in zip(prompts, model_answers, sft_answers)
        if "error" not in m and "error" not in t
    ]
    questions, mine, theirs = (list(column) for column in zip(*games)) if games else ([], [], [])
    first, raw_first, prob_first = judge_pairs(judge, cfg, questions, mine, theirs)  # the trial's answer as A
    second, raw_second, prob_second = judge_pairs(judge, cfg, questions, theirs, mine)  # ... and as B
    _write_jsonl(
        path,
        [
            {
                "question": q,
                "model_first": a,
                "model_second": b,
                "raw_first": ra,
                "raw_second": rb,
                "prob_first": pa,  # P(position A wins) + ½·P(tie), or None
                "prob_second": pb,
                "model_chars": len(m),
                "sft_chars": len(t),
            }
            for q, a, b, ra, rb, pa, pb, m, t in zip(
                questions, first, second, raw_first, raw_second, prob_first, prob_second, mine, theirs
            )
        ],
    )


# Score of the answer shown in position A for each verdict (a tie is half a win).
_SCORE_A = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}


def _win_rates(rows: list[dict[str, Any]], cfg: EvalConfig) -> dict[str, Any]:
    first = [r["model_first"] for r in rows]
    second = [r["model_second"] for r in rows]
    if all(v is None for v in first + second):
        return {"win_rate": None, "lc_win_rate": None, "preferences": None, "judge_consistency": None,
                "judged_games": 0}  # fmt: skip
    wr = pairwise_win_rate(first, second)
    # Soft only when every readable game has a probability (rows written before probabilities were kept have none).
    games = [(r, key, model_is_a) for r in rows for key, model_is_a in (("first", True), ("second", False))
             if r[f"model_{key}"] is not None]  # fmt: skip
    soft = cfg.soft_preferences and all(r.get(f"prob_{key}") is not None for r, key, _ in games)
    # One (preference, lengths) sample per readable game.
    prefs, model_len, sft_len = [], [], []
    for r, key, model_is_a in games:
        score_a = r[f"prob_{key}"] if soft else _SCORE_A[r[f"model_{key}"]]
        prefs.append(score_a if model_is_a else 1.0 - score_a)
        model_len.append(r["model_chars"])
        sft_len.append(r["sft_chars"])
    lc = length_controlled_win_rate(prefs, model_len, sft_len, min_samples=cfg.lc_min_samples)
    return {
        "win_rate": sum(prefs) / len(prefs) if soft else wr.win_rate,
        "lc_win_rate": lc,
        "preferences": "soft" if soft else "hard",
        "judge_consistency": wr.consistency,
        "judged_games": wr.n_games,
    }


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """All rows or nothing: written to a temporary name, then renamed, so a rerun never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


def _release(engine) -> None:
    engine.close()
    del engine
    gc.collect()
