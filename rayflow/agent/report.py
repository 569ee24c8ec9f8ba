"""Reports: per target a Markdown page (scores, per-topic table, transcript quotes that justify the scores, a
plot), and one comparative page over several targets. Plain Python + matplotlib.

    md = target_report("tiny-small", sessions)         # sessions: [{"id", "spec", "scores", "turns": [...]}]
    plot_target("tiny-small", sessions, "scores.png")  # per-turn fulfilment by item, and the four scores
    comparative_report({"a": sessions_a, "b": sessions_b}, plot="targets.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rayflow.agent.scores import SCORES, item_scores, session_scores

QUOTE_CHARS = 240


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1] + "…"


def overall_scores(sessions: Sequence[dict]) -> dict:
    """`session_scores` over all the sessions' turns together (one target's)."""
    turns = [t for s in sessions for t in s["turns"]]
    return session_scores(turns) if turns else dict.fromkeys(SCORES)


def target_report(target: str, sessions: Sequence[dict], plot: str | None = None) -> str:
    """Markdown for one target over its sessions (each with its `turns` records)."""
    scores = overall_scores(sessions)
    turns = [{**t, "session": i} for i, s in enumerate(sessions) for t in s["turns"]]
    counts = (f"{len(sessions)} session(s), {len(turns)} turns, {scores.get('graded', 0)} graded, "
              f"{scores.get('parse_failures', 0)} grader replies that did not parse, "
              f"{sum(t.get('examiner_fallback', False) for t in turns)} examiner fallbacks, "
              f"{sum(bool(t.get('error')) for t in turns)} refused prompts.")  # fmt: skip
    lines = [f"# TestAgent report: {target}", "", counts, "",
             "| score | value |", "|---|---|", *(f"| {k} | {_fmt(scores[k])} |" for k in SCORES), ""]  # fmt: skip
    if plot:
        lines += [f"![scores]({plot})", ""]
    by_topic: dict[str, list[dict]] = {}
    for t in turns:
        by_topic.setdefault(t["topic"], []).append(t)
    lines += [
        "## By topic",
        "",
        "| topic | turns | " + " | ".join(SCORES) + " |",
        "|---|---|" + "---|" * len(SCORES),
    ]
    for topic, ts in sorted(by_topic.items()):
        per_item: dict[tuple, list[dict]] = {}
        for t in ts:
            per_item.setdefault((t["session"], t["item_id"]), []).append(t)
        item_values = [item_scores(v) for v in per_item.values()]
        means = []
        for k in SCORES:
            vals = [v[k] for v in item_values if v[k] is not None]
            means.append(_fmt(sum(vals) / len(vals) if vals else None))
        lines.append(f"| {topic} | {len(ts)} | " + " | ".join(means) + " |")
    lines += ["", "## Evidence from the transcripts", ""]
    graded = [t for t in turns if t.get("score") is not None]
    picks = []
    if graded:
        picks.append(("best answer (professionalism)", max(graded, key=lambda t: t["score"])))
        picks.append(("weakest answer (professionalism)", min(graded, key=lambda t: t["score"])))
    pressed = [t for t in graded if t["type"] in ("challenge", "clarify")]
    if pressed:
        picks.append(("under challenge or rephrasing (stability)", min(pressed, key=lambda t: t["score"])))
    deep = [t for t in graded if t["type"] == "deepen"]
    if deep:
        picks.append(("deepest probe (dynamism)", max(deep, key=lambda t: t["turn"])))
    for title, t in picks:
        reason = next((r for r in t.get("reasons", []) if r), "")
        lines += [f"**{title}** — topic *{t['topic']}*, turn {t['turn']} ({t['type']}), fulfilment {t['score']:.2f}",
                  "", f"> Q: {_quote(t['question'])}", ">", f"> A: {_quote(t['answer'])}", ""]  # fmt: skip
        if reason:
            lines += [f"Grader: {_quote(reason)}", ""]
    if not picks:
        lines += ["No graded turn yet.", ""]
    return "\n".join(lines)


def plot_target(target: str, sessions: Sequence[dict], path: str | Path) -> None:
    """A PNG: fulfilment per turn for each item (left), the four scores (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for s in sessions:
        per_item: dict[str, list[dict]] = {}
        for t in s["turns"]:
            per_item.setdefault(t["item_id"], []).append(t)
        for item_id, ts in per_item.items():
            pts = [(t["turn"], t["score"]) for t in ts if t.get("score") is not None]
            if pts:
                left.plot(*zip(*pts), marker="o", alpha=0.6, label=item_id if len(per_item) <= 8 else None)
    left.set(xlabel="turn", ylabel="criterion fulfilment", ylim=(-0.05, 1.05), title=f"{target}: turns")
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=6)
    scores = overall_scores(sessions)
    right.bar(SCORES, [scores[k] or 0 for k in SCORES], color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    right.set(ylim=(0, 1), title="scores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparative_report(targets: Mapping[str, Sequence[dict]], plot: str | None = None) -> str:
    """Markdown comparing targets: one row per target, then each target's own report."""
    lines = ["# TestAgent: comparative report", "", "| target | sessions | turns | " + " | ".join(SCORES) + " |",
             "|---|---|---|" + "---|" * len(SCORES)]  # fmt: skip
    for name, sessions in targets.items():
        scores = overall_scores(sessions)
        lines.append(f"| {name} | {len(sessions)} | {sum(len(s['turns']) for s in sessions)} | "
                     + " | ".join(_fmt(scores[k]) for k in SCORES) + " |")  # fmt: skip
    if plot:
        lines += ["", f"![targets]({plot})"]
    for name, sessions in targets.items():
        lines += ["", target_report(name, sessions).replace("# TestAgent report", "## Target", 1)
                  .replace("\n## ", "\n### ")]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_targets(targets: Mapping[str, Sequence[dict]], path: str | Path) -> None:
    """A PNG: the four scores of each target side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(targets)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names) + 3), 3.6))
    width = 0.8 / len(SCORES)
    for j, k in enumerate(SCORES):
        values = [overall_scores(targets[n])[k] or 0 for n in names]
        ax.bar(np.arange(len(names)) + j * width, values, width, label=k)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set(ylim=(0, 1), ylabel="score", title="TestAgent scores by target")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
