"""The report's choice of β, its Markdown and its plots, from plain rows (no Ray)."""

import pandas as pd
import pytest

from rayflow.tune.report import SelectionConfig, choose, plot_metrics, results_table, write_report


def trial(beta, seed, *, acc=0.5, wr=0.5, lc=0.5, status="ok", degenerate=False, reasons="", ref="sft"):
    return {
        "trial_id": f"t-{beta:g}-{seed}",
        "beta": beta,
        "seed": seed,
        "loss_type": "sigmoid",
        "reference": ref,
        "status": status,
        "error": None if status == "ok" else "RuntimeError: boom",
        "eval_reward_accuracy": acc,
        "eval_h": 10 * beta,
        "eval_logratio_chosen": -beta,
        "eval_logratio_rejected": -2 * beta,
        "eval_kl_proxy": beta**2,
        "eval_loss": 0.6,
        "win_rate": wr,
        "lc_win_rate": lc,
        "gen_length": 20.0,
        "repetition": 0.1,
        "degenerate": degenerate,
        "degenerate_reasons": reasons,
    }


def test_choose_takes_the_best_mean_over_seeds_of_qualifying_configurations():
    table = results_table(
        [
            # β = 0.005 has the best LC win rate but one seed degenerated: the configuration is out.
            trial(0.005, 0, lc=0.9),
            trial(0.005, 1, lc=0.8, degenerate=True, reasons="repetition: 0.90"),
            # β = 0.01: mean LC 0.65; β = 0.1: mean LC 0.6; β = 0.05 errored on one seed.
            trial(0.01, 0, lc=0.7),
            trial(0.01, 1, lc=0.6),
            trial(0.05, 0, lc=0.99),
            trial(0.05, 1, status="error"),
            trial(0.1, 0, lc=0.6),
            trial(0.1, 1, lc=0.6),
        ]
    )
    assert list(table["beta"]) == [0.005, 0.005, 0.01, 0.01, 0.05, 0.05, 0.1, 0.1]
    sel = choose(table, SelectionConfig())
    assert (sel.beta, sel.metric, sel.reference, sel.loss_type) == (0.01, "lc_win_rate", "sft", "sigmoid")
    assert sel.value == pytest.approx(0.65)
    assert "2 seed(s)" in sel.rule and "degenerated" in sel.rule


def test_auto_metric_falls_back_and_ties_go_to_higher_accuracy_then_larger_beta():
    # No LC win rate (too few games): auto uses the raw win rate.
    rows = [trial(0.01, 0, wr=0.7, lc=None), trial(0.1, 0, wr=0.6, lc=None)]
    assert choose(results_table(rows), SelectionConfig()).metric == "win_rate"
    # No evaluation stage at all: held-out reward accuracy.
    rows = [trial(0.01, 0, acc=0.8, wr=None, lc=None), trial(0.1, 0, acc=0.9, wr=None, lc=None)]
    sel = choose(results_table(rows), SelectionConfig())
    assert (sel.metric, sel.beta) == ("eval_reward_accuracy", 0.1)
    # Equal win rates: the higher accuracy wins; equal on both: the larger β.
    rows = [trial(0.01, 0, wr=0.6, acc=0.9, lc=None), trial(0.1, 0, wr=0.6, acc=0.8, lc=None)]
    assert choose(results_table(rows), SelectionConfig()).beta == 0.01
    rows = [trial(0.01, 0, wr=0.6, lc=None), trial(0.1, 0, wr=0.6, lc=None)]
    sel = choose(results_table(rows), SelectionConfig())
    assert sel.beta == 0.1 and "2 configurations tied on win_rate" in sel.rule
    # An explicit metric is used as asked.
    rows = [trial(0.01, 0, acc=0.9, wr=0.1), trial(0.1, 0, acc=0.5, wr=0.9)]
    assert choose(results_table(rows), SelectionConfig(metric="eval_reward_accuracy")).beta == 0.01


def test_nothing_qualifies():
    rows = [trial(0.01, 0, degenerate=True, reasons="nan: eval/loss"), trial(0.1, 0, status="error")]
    sel = choose(results_table(rows), SelectionConfig())
    assert sel.beta is None and "errored or degenerated" in sel.rule
    assert choose(pd.DataFrame(), SelectionConfig()).rule == "no trials"


def test_report_and_plots(tmp_path):
    rows = [
        trial(0.005, 0, lc=0.2, degenerate=True, reasons="length: 3.0x the SFT model's mean length (> 2.0x)"),
        trial(0.01, 0, lc=0.7),
        trial(0.01, 1, lc=0.5),
        trial(0.1, 0, lc=0.55),
        trial(0.1, 1, status="error"),
    ]
    table = results_table(rows)
    sel = choose(table, SelectionConfig())
    paths = plot_metrics(tmp_path / "plots", table)
    names = {p.name for p in paths}
    assert {"lc_win_rate.png", "eval_h.png", "eval_kl_proxy.png", "gen_length.png"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    context = {
        "model": "tiny:tiny",
        "steps": 6,
        "scheduler": "fifo",
        "sft": {"gen_length": 10.0, "repetition": 0.25},
    }
    report = write_report(tmp_path, table, sel, context)
    text = report.read_text()
    assert "**Use β = 0.01**" in text and "lc_win_rate = 0.600" in text
    assert "Rule: highest mean lc_win_rate" in text
    assert "starting (SFT) model on the same held-out prompts: mean length 10.0 tokens" in text
    assert "`t-0.005-0` (β = 0.005, seed 0): length: 3.0x" in text  # degenerate, with its reason
    assert "## Failed trials" in text and "`t-0.1-1`" in text
    assert "| t-0.01-1 | 0.01 | 1 |" in text  # the per-trial table
    assert "Early-stopping schedulers" in text  # why FIFO
    assert "![LC win rate vs SFT](plots/lc_win_rate.png)" in text
