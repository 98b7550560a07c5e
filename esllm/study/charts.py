"""Figures of the results (matplotlib, Agg backend, no display needed): the study table as grouped bars
with 95% CI whiskers, and Bradley–Terry ratings with their CIs. Pure: they take report.py's results and
return a Figure; the caller shows it (Gradio gr.Plot) or saves it.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from esllm.study.bradley_terry import BTResult
from esllm.study.stats import PROMEDIO, StudyTable, ordered_categories


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def study_bars(table: StudyTable, title: str = "", *, labels: Mapping[str, str] = {}, order: Sequence[str] = ()):
    """Grouped bars: categories (in `order`, by their `labels`) and Promedio on x, one bar per contestant,
    whiskers = 95% CI."""
    plt = _plt()
    rows = ordered_categories(table.categories, order) + [PROMEDIO]
    k = max(1, len(table.contestants))
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.2), dpi=100)
    for j, con in enumerate(table.contestants):
        xs, means, lo, hi = [], [], [], []
        for i, cat in enumerate(rows):
            c = table.cell(cat, con)
            if c is None or math.isnan(c.mean):
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            means.append(c.mean)
            lo.append(max(0.0, c.mean - c.ci_low))
            hi.append(max(0.0, c.ci_high - c.mean))
        ax.bar(xs, means, width=width * 0.95, label=con, yerr=[lo, hi], capsize=3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([labels.get(r, r.replace("_", " ")) for r in rows], rotation=20, ha="right")
    ax.set_ylim(0, 5.4)
    ax.set_ylabel(f"media ({table.criterion}, 1-5) e IC 95 %")
    ax.axhline(3, color="grey", linewidth=0.6, linestyle=":")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=min(k, 3), frameon=False)
    fig.tight_layout()
    return fig


def bt_bars(result: BTResult, title: str = "Bradley–Terry (votos de «Comparar»)"):
    """Horizontal bars of the Elo-like ratings with 95% CI whiskers, best on top."""
    plt = _plt()
    rs = list(reversed(result.ratings))
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(rs) + 1.4), dpi=100)
    ys = range(len(rs))
    ax.barh(list(ys), [r.rating - 1000 for r in rs], left=1000,
            xerr=[[max(0.0, r.rating - r.ci_low) for r in rs], [max(0.0, r.ci_high - r.rating) for r in rs]],
            capsize=3, color="#4c72b0")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([f"{r.contestant} (n={r.n_votes})" for r in rs])
    ax.axvline(1000, color="grey", linewidth=0.6)
    ax.set_xlabel("puntuación (escala tipo Elo, media 1000)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
