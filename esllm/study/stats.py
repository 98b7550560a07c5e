"""The study's table from plain data: category means with bootstrap CIs and the Promedio row.

    table = study_table(df, "general", seed=0)   # df: item, category, contestant, rater, criterion, value
    rows = table_rows(table)                     # list of dicts for display or CSV (Spanish keys)

Pure functions over pandas/numpy data: no database, no Gradio, no models. Every random draw comes from
the explicit seed or `numpy.random.Generator` passed in, so a result is reproducible.

What this module does not know: who may see contestant names (callers decide), which rows belong to a
session (esllm/study/results.py selects them), and whether a rater rated a unit twice (the store's UNIQUE keys
rule that out; duplicated (item, contestant, rater, criterion) rows here would count as separate ratings).

Bootstraps are percentile bootstraps. Resampling m items with replacement from a cell is drawn as a
multinomial over the cell's distinct item scores (counts ~ Multinomial(m, share of each value)): the
same distribution as drawing item indices, at a cost that does not grow with m.

This module holds the study table; Krippendorff's alpha lives in esllm/study/krippendorff.py, Bradley–Terry in
esllm/study/bradley_terry.py, and the score frame's columns, codes and seed rule in esllm/study/score_frame.py:
import each name from the module that defines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from esllm.study.score_frame import Seed, as_generator, criterion_rows, value_codes

PROMEDIO = "Promedio"


def promedio(category_means: Mapping[str, float] | Iterable[float]) -> float:
    """The study's Promedio: the unweighted mean of the category means (NaN ones skipped)."""
    vals = list(category_means.values()) if isinstance(category_means, Mapping) else list(category_means)
    vals = [float(v) for v in vals if not math.isnan(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


# ---------------------------------------------------------------- study table

@dataclass(frozen=True)
class Cell:
    """One mean with its 95% percentile-bootstrap CI; n = items, n_scores = single ratings behind them."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_scores: int


@dataclass
class StudyTable:
    """Categories (rows, first-appearance order in the input) × contestants (columns, same rule).

    `cells[(category, contestant)]`; the row `PROMEDIO` holds the unweighted mean of that contestant's
    category means, its n is the sum of the categories' n. A contestant with no scores in a category has
    no cell there, and its Promedio runs over the categories it has.
    """

    criterion: str
    categories: list[str]
    contestants: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    n_boot: int = 0

    def cell(self, category: str, contestant: str) -> Cell | None:
        return self.cells.get((category, contestant))


@dataclass
class _Units:
    """One criterion's scores reduced to (category, contestant, item) units: the item scores."""

    categories: list
    contestants: list
    cat: np.ndarray  # per unit: category code
    con: np.ndarray  # contestant code
    items: np.ndarray  # distinct item ids
    item: np.ndarray  # per unit: index into items
    score: np.ndarray  # mean over raters
    n_scores: np.ndarray  # raters


def _units(df: pd.DataFrame, criterion: str) -> _Units:
    d = criterion_rows(df, criterion)
    cat, categories = value_codes(d["category"])
    con, contestants = value_codes(d["contestant"])
    item, items = pd.factorize(d["item"])
    ncon, nitem = max(len(contestants), 1), max(len(items), 1)
    key = (cat * ncon + con) * nitem + item
    unit, first = pd.factorize(key)  # units in first-appearance order
    n = np.bincount(unit, minlength=len(first))
    sums = np.bincount(unit, weights=d["value"].to_numpy(dtype=float), minlength=len(first))
    return _Units(categories, contestants, first // nitem // ncon, first // nitem % ncon,
                  np.asarray(items), first % nitem, sums / np.maximum(n, 1), n)


def item_scores(df: pd.DataFrame, criterion: str = "general") -> pd.DataFrame:
    """One row per (category, contestant, item): `score` = mean over its raters, `n_scores` = raters."""
    u = _units(df, criterion)
    return pd.DataFrame({"category": [u.categories[i] for i in u.cat],
                         "contestant": [u.contestants[i] for i in u.con], "item": u.items[u.item].tolist(),
                         "score": u.score, "n_scores": u.n_scores})


def _boot_means(x: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """n_boot means of len(x) values drawn with replacement from x (multinomial over distinct values)."""
    uniq, counts = np.unique(x, return_counts=True)
    m = len(x)
    draws = rng.multinomial(m, counts / m, size=n_boot)
    return draws @ uniq / m


def _ci(boot: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def study_table(df: pd.DataFrame, criterion: str = "general", *, seed: Seed = 0, n_boot: int = 2000) -> StudyTable:
    """Category × contestant means of item scores, with 95% bootstrap CIs, n, and the Promedio row.

    A cell's CI resamples that cell's items; the Promedio CI resamples items within each category
    independently and recomputes the mean of the category means.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    rng = as_generator(seed)
    u = _units(df, criterion)
    categories, contestants = [str(c) for c in u.categories], [str(c) for c in u.contestants]
    table = StudyTable(criterion, categories, contestants, n_boot=n_boot)
    boots: dict[str, list[np.ndarray]] = {c: [] for c in contestants}
    sums: dict[str, list[float]] = {c: [] for c in contestants}
    cell = u.cat * max(len(contestants), 1) + u.con
    order = np.argsort(cell, kind="stable")
    bounds = np.cumsum(np.bincount(cell, minlength=len(categories) * len(contestants)))
    for c, (lo, hi) in enumerate(zip(np.concatenate([[0], bounds[:-1]]), bounds)):
        if hi == lo:
            continue
        cat, con = categories[c // len(contestants)], contestants[c % len(contestants)]
        idx = order[lo:hi]
        boot, mean = _boot_means(u.score[idx], rng, n_boot), float(u.score[idx].mean())
        table.cells[(cat, con)] = Cell(mean, *_ci(boot), n=len(idx), n_scores=int(u.n_scores[idx].sum()))
        boots[con].append(boot)
        sums[con].append(mean)
    for con in contestants:
        if not boots[con]:
            continue
        cats = [table.cells[(cat, con)] for cat in categories if (cat, con) in table.cells]
        prom_boot = np.mean(np.vstack(boots[con]), axis=0)
        table.cells[(PROMEDIO, con)] = Cell(promedio(sums[con]), *_ci(prom_boot), n=sum(c.n for c in cats),
                                            n_scores=sum(c.n_scores for c in cats))
    return table


def ordered_categories(categories: Sequence[str], order: Sequence[str] = ()) -> list[str]:
    """`categories` in the order of `order` (a prompt set's), those not in it after, as they came."""
    rank = {c: i for i, c in enumerate(order)}
    return sorted(categories, key=lambda c: (rank.get(c, len(rank)), list(categories).index(c)))


def table_rows(table: StudyTable) -> list[dict]:
    """Long rows (categories in order, then Promedio): criterio, categoria, concursante, media, ic95_inf,
    ic95_sup, n, n_puntuaciones."""
    out = []
    for cat in table.categories + [PROMEDIO]:
        for con in table.contestants:
            c = table.cells.get((cat, con))
            if c is not None:
                out.append({"criterio": table.criterion, "categoria": cat, "concursante": con, "media": c.mean,
                            "ic95_inf": c.ci_low, "ic95_sup": c.ci_high, "n": c.n, "n_puntuaciones": c.n_scores})
    return out


def display_frame(table: StudyTable, decimals: int = 2, *, labels: Mapping[str, str] = {},
                  order: Sequence[str] = ()) -> pd.DataFrame:
    """Wide text table for a screen: rows = categories (in `order`, then the rest) + Promedio, each shown by
    its label in `labels` (else its key), columns = contestants, cells "3.62 [3.40–3.85] n=10" ("—" where a
    contestant has no scores)."""
    rows = []
    for cat in ordered_categories(table.categories, order) + [PROMEDIO]:
        row = {"Categoría": labels.get(cat, cat)}
        for con in table.contestants:
            c = table.cells.get((cat, con))
            row[con] = "—" if c is None else (f"{c.mean:.{decimals}f} [{c.ci_low:.{decimals}f}–"
                                              f"{c.ci_high:.{decimals}f}] n={c.n}")
        rows.append(row)
    return pd.DataFrame(rows, columns=["Categoría"] + table.contestants)
