"""The sweep's answer: a results table, the chosen β and the rule that chose it, and plots against β.

Pure pandas/matplotlib over plain rows (one dict per trial), so it is tested without Ray. Why these metrics:
the DPO loss is not comparable across β (β scales the logit), so the report puts the raw margin
h = Δθ(y_w) − Δθ(y_l) and the log-prob drifts from the reference beside held-out reward accuracy, and picks β
by what a user wants from alignment — the judge's verdict against the starting model — among trials that did
not degenerate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from rayflow.config import Config

# (column, label, higher is better) for the table and the plots, in reading order.
METRICS: tuple[tuple[str, str, bool | None], ...] = (
    ("lc_win_rate", "LC win rate vs SFT", True),
    ("win_rate", "win rate vs SFT", True),
    ("eval_reward_accuracy", "held-out reward accuracy", True),
    ("eval_h", "held-out raw margin h (nats)", None),
    ("eval_logratio_chosen", "chosen log-prob drift (nats)", None),
    ("eval_logratio_rejected", "rejected log-prob drift (nats)", None),
    ("eval_kl_proxy", "KL proxy ½Δ² (nats²)", None),
    ("eval_loss", "held-out DPO loss (not comparable across β)", None),
    ("gen_length", "mean generation length (tokens)", None),
    ("repetition", "repeated n-gram rate", None),
)

# Tune's last report -> table column.
TRAIN_COLUMNS = {
    "eval/rewards/accuracies": "eval_reward_accuracy",
    "eval/h": "eval_h",
    "eval/rewards/margins": "eval_beta_h",
    "eval/logratio/chosen": "eval_logratio_chosen",
    "eval/logratio/rejected": "eval_logratio_rejected",
    "eval/kl_proxy": "eval_kl_proxy",
    "eval/loss": "eval_loss",
    "loss": "train_loss",
    "step": "steps",
}

WHY_FIFO = (
    "Trials run to the end under FIFO. Early-stopping schedulers (ASHA, median stopping) rank trials by early "
    "results, and early results mislead both ways for β: β scales DPO's gradient, so small-β trials often start "
    "slower and look worse early although the best β is often small, while a too-small β degenerates only late. "
    "A β sweep is a comparison of finished runs."
)


class SelectionConfig(Config):
    """How the report picks β."""

    metric: Literal["auto", "lc_win_rate", "win_rate", "eval_reward_accuracy"] = Field(
        "auto",
        description="auto: LC win rate if every candidate has one, else win rate, else reward accuracy",
    )


@dataclass(frozen=True)
class Selection:
    """The chosen configuration (None when no trial qualifies) and the rule, in words, that chose it."""

    beta: float | None
    loss_type: str | None
    reference: str | None
    metric: str | None
    value: float | None
    rule: str


def results_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per trial, sorted by (reference, loss type, β, seed)."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        return table
    return table.sort_values(["reference", "loss_type", "beta", "seed"]).reset_index(drop=True)


def choose(table: pd.DataFrame, cfg: SelectionConfig) -> Selection:
    """Pick (reference, loss type, β) by the mean over seeds of the selection metric.

    A configuration qualifies when all its seeds finished without error and none degenerated. The metric is
    `cfg.metric` (auto: LC win rate when every qualifying trial has one, else win rate when every one has
    one, else held-out reward accuracy). Ties go to the higher held-out reward accuracy, then to the larger β
    (closer to the reference, the safer side of a tie).
    """
    if table.empty:
        return Selection(None, None, None, None, None, "no trials")
    keys = ["reference", "loss_type", "beta"]
    bad = table["status"].ne("ok") | table["degenerate"].astype(bool)
    bad_groups = set(table.loc[bad, keys].itertuples(index=False, name=None))
    ok = table[[tuple(r) not in bad_groups for r in table[keys].itertuples(index=False, name=None)]]
    if ok.empty:
        return Selection(None, None, None, None, None, "every configuration errored or degenerated")
    metric = cfg.metric
    if metric == "auto":
        metric = next(
            (m for m in ("lc_win_rate", "win_rate") if m in ok and ok[m].notna().all()),
            "eval_reward_accuracy",
        )
    if metric not in ok or ok[metric].isna().all():
        return Selection(None, None, None, metric, None, f"no qualifying trial has {metric}")
    order = list(dict.fromkeys([metric, "eval_reward_accuracy"]))  # the metric may be the tie-breaker itself
    means = ok.groupby(keys, as_index=False)[order].mean()
    means = means.sort_values([*order, "beta"], ascending=False, na_position="last")
    best = means.iloc[0]
    n_seeds = int(ok.groupby(keys).size().max())
    rule = (
        f"highest mean {metric} over {n_seeds} seed(s) among configurations whose every seed finished and "
        "none degenerated; ties to higher held-out reward accuracy, then to larger β"
    )
    tied = int(means[metric].sub(best[metric]).abs().le(1e-12).sum())
    if tied > 1:
        # Say so: a tie means the metric did not separate the candidates (e.g. a judge that calls every game
        # a tie), and the choice rests on the tie-breakers.
        rule += f" ({tied} configurations tied on {metric}: the tie-breakers decided)"
    return Selection(
        float(best["beta"]), str(best["loss_type"]), str(best["reference"]), metric, float(best[metric]), rule
    )


def write_report(out: Path, table: pd.DataFrame, selection: Selection, context: dict[str, Any]) -> Path:
    """Write `report.md`: the choice and its rule, the per-trial table, degenerate/failed trials, the plots."""
    lines = ["# DPO β sweep", ""]
    if selection.beta is not None:
        lines += [
            (
                f"**Use β = {selection.beta:g}** (loss `{selection.loss_type}`, reference `{selection.reference}`): "
                f"{selection.metric} = {selection.value:.3f}."
            ),
            "",
            f"Rule: {selection.rule}.",
        ]
    else:
        lines += [f"**No β chosen**: {selection.rule}."]
    lines += [
        "",
        (
            f"Policy `{context.get('model')}`; {context.get('train_examples')} training pairs, "
            f"{context.get('eval_examples')} held-out; {context.get('steps')} optimizer steps per trial; "
            f"scheduler `{context.get('scheduler')}`."
        ),
        "",
    ]
    sft = context.get("sft") or {}
    if sft.get("gen_length") is not None:
        lines += [
            (
                f"The starting (SFT) model on the same held-out prompts: mean length {sft['gen_length']:.1f} "
                f"tokens, repeated n-gram rate {sft['repetition']:.2f}."
            ),
            "",
        ]
    lines += ["## Trials", "", _markdown_table(table), ""]
    flagged = table[table["degenerate"].astype(bool)] if not table.empty else table
    lines += ["## Degenerate trials", ""]
    if flagged.empty:
        lines += ["None."]
    else:
        lines += [
            f"- `{r.trial_id}` (β = {r.beta:g}, seed {r.seed}): {r.degenerate_reasons}"
            for r in flagged.itertuples()
        ]
    failed = table[table["status"].ne("ok")] if not table.empty else table
    if not failed.empty:
        lines += ["", "## Failed trials", ""]
        lines += [f"- `{r.trial_id}` (β = {r.beta:g}, seed {r.seed}): {r.error}" for r in failed.itertuples()]
    lines += [
        "",
        "## How to read this",
        "",
        (
            "- Win rates are against the starting (SFT) model, judged pairwise with positions swapped; a tie "
            "counts half. The LC win rate is the win rate predicted at zero length difference (AlpacaEval 2 "
            "style); it is empty with too few games."
        ),
        "- h is the raw DPO margin Δθ(y_w) − Δθ(y_l) in nats, comparable across β; the DPO loss is not.",
        (
            "- Log-prob drifts are the policy's change on the held-out chosen and rejected responses; both "
            "falling (likelihood displacement) with a growing KL proxy is what a too-small β looks like."
        ),
        f"- {WHY_FIFO}",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{label}](plots/{col}.png)" for col, label, _ in METRICS if _has_values(table, col)]
    lines += ["", "Training curves: `tensorboard --logdir tune/`."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_metrics(out: Path, table: pd.DataFrame) -> list[Path]:
    """One PNG per metric against β (log axis): the mean over seeds with the min–max spread, one line per
    (reference, loss type); each seed as a dot, degenerate trials as red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for col, label, _ in METRICS:
        if not _has_values(table, col):
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for (ref, loss), group in table.groupby(["reference", "loss_type"]):
            values = group.dropna(subset=[col])
            if values.empty:
                continue
            stats = values.groupby("beta")[col].agg(["mean", "min", "max"]).reset_index()
            err = [stats["mean"] - stats["min"], stats["max"] - stats["mean"]]
            ax.errorbar(
                stats["beta"], stats["mean"], yerr=err, marker="o", capsize=3, label=f"{ref} / {loss}"
            )
            ax.scatter(values["beta"], values[col], s=10, alpha=0.5, color="gray")
            bad = values[values["degenerate"].astype(bool)]
            if not bad.empty:
                ax.scatter(bad["beta"], bad[col], marker="x", s=60, color="red", label="degenerate")
        ax.set_xscale("log")
        betas = sorted(table["beta"].dropna().unique())
        ax.set_xticks(betas, [f"{b:g}" for b in betas])  # the grid's own values, not powers of ten
        ax.minorticks_off()
        ax.set_xlabel("β")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{col}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _has_values(table: pd.DataFrame, col: str) -> bool:
    return col in table and table[col].notna().any()


def _markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no trials)"
    cols = ["trial_id", "beta", "seed", "loss_type", "reference", "status"]
    cols += [c for c, _, _ in METRICS if c in table] + ["degenerate"]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    body = ["| " + " | ".join(_cell(row[c]) for c in cols) + " |" for _, row in table.iterrows()]
    return "\n".join([head, *body])


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
