"""rayflow's length-controlled win rate against the `alpaca_eval` package's own `get_length_controlled_winrate`
on the same games: the full `length_controlled_v1` (instruction difficulty + gamed-baseline regularisation),
`length_controlled_noreg` and `length_controlled_minimal`, with hard and soft preferences.

The package downloads `df_gamed.csv` (the gamed baselines' games and the instruction difficulties) from the
Hub; the test writes a fixture in that file's layout and patches the download to it.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from rayflow.eval.alignment import GamedGames, length_controlled_win_rate

pd = pytest.importorskip("pandas")
sklearn = pytest.importorskip("sklearn")
glm_winrate = pytest.importorskip("alpaca_eval.metrics.glm_winrate")

N = 90


def _games(soft: bool, seed: int):
    """One game per instruction, in instruction order (AlpacaEval reads the instruction from the row position)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, N)
    baseline_len = rng.integers(200, 2000, N)
    model_len = (baseline_len * rng.uniform(0.4, 2.5, N)).astype(int)
    logit = 0.3 + 1.5 * np.tanh((model_len - baseline_len) / 700) - 0.8 * difficulty
    pref = 1 / (1 + np.exp(-logit))
    pref = np.clip(pref + rng.normal(0, 0.1, N), 0, 1) if soft else (rng.random(N) < pref).astype(float)
    # The gamed baselines: a verbose and a concise variant of the baseline, each judged against it.
    rows = []
    for model, shift in (("gpt4_verbose", -1.0), ("gpt4_concise", 1.0)):
        sdl = rng.normal(shift, 0.5, N)
        gamed_pref = np.clip(0.5 - 0.3 * np.tanh(sdl) + rng.normal(0, 0.1, N), 0, 1)
        rows += [
            {"model": model, "index": i, "preference": gamed_pref[i], "std_delta_len": sdl[i],
             "instruction_difficulty": difficulty[i], "not_gamed_baseline": False}
            for i in range(N)
        ]  # fmt: skip
    return pref, model_len, baseline_len, difficulty, pd.DataFrame(rows)


def _alpaca_eval(pref, model_len, baseline_len, df_gamed, glm_name, tmp_path) -> float:
    path = tmp_path / "df_gamed.csv"
    df_gamed.to_csv(path, index=False)
    annotations = pd.DataFrame(
        {
            "output_1": ["b" * int(n) for n in baseline_len],  # the baseline's output
            "output_2": ["m" * int(n) for n in model_len],  # the model's output
            "preference": pref + 1.0,  # AlpacaEval's scale: 1 = baseline wins, 2 = model wins
            "generator_1": "baseline",
            "generator_2": "model",
            "annotator": "judge",
        }
    )
    # The package switches on scikit-learn's metadata routing globally; config_context puts it back.
    with sklearn.config_context(), mock.patch.object(glm_winrate, "hf_hub_download", return_value=str(path)):
        out = glm_winrate.get_length_controlled_winrate(
            annotations, glm_name=glm_name, save_weights_dir=None, is_warn_extreme_changes=False
        )
    return out["length_controlled_winrate"] / 100


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize(
    "glm_name", ["length_controlled_v1", "length_controlled_noreg", "length_controlled_minimal"]
)
def test_equals_alpaca_eval(glm_name, soft, tmp_path):
    pref, model_len, baseline_len, difficulty, df_gamed = _games(soft, seed=3)
    expected = _alpaca_eval(pref, model_len, baseline_len, df_gamed, glm_name, tmp_path)
    inputs = {}
    if glm_name != "length_controlled_minimal":
        inputs["instruction_difficulty"] = difficulty
    if glm_name == "length_controlled_v1":
        inputs["gamed"] = GamedGames(
            df_gamed["preference"].to_numpy(),
            df_gamed["std_delta_len"].to_numpy(),
            df_gamed["instruction_difficulty"].to_numpy(),
        )
    ours = length_controlled_win_rate(pref, model_len, baseline_len, **inputs)
    # liblinear stops at a relative tolerance of 1e-4; the rates agree far below a leaderboard's last digit.
    assert ours == pytest.approx(expected, abs=2e-4)
    raw = float(np.mean(pref))
    assert abs(ours - raw) > 0.01  # the games are built so that length control moves the rate


def test_instruction_term_and_regularisation_change_the_rate():
    pref, model_len, baseline_len, difficulty, df_gamed = _games(True, seed=5)
    gamed = GamedGames(
        *(df_gamed[c].to_numpy() for c in ("preference", "std_delta_len", "instruction_difficulty"))
    )
    minimal = length_controlled_win_rate(pref, model_len, baseline_len)
    noreg = length_controlled_win_rate(pref, model_len, baseline_len, instruction_difficulty=difficulty)
    full = length_controlled_win_rate(
        pref, model_len, baseline_len, instruction_difficulty=difficulty, gamed=gamed
    )
    assert len({round(minimal, 4), round(noreg, 4), round(full, 4)}) == 3
    with pytest.raises(ValueError, match="instruction_difficulty"):
        length_controlled_win_rate(pref, model_len, baseline_len, gamed=gamed)
