"""The study's numbers from plain data: category means with bootstrap CIs and the
Promedio row, Krippendorff's alpha (ordinal), and Bradley–Terry ratings from Comparar votes.

    table = study_table(df, "general", seed=0)   # df: item, category, contestant, rater, criterion, value
    rows = table_rows(table)                     # list of dicts for display or CSV (Spanish keys)
    alpha = krippendorff_alpha_ordinal(df)       # units = (item, contestant), coders = raters
    bt = bradley_terry([(["m1", "m2", "m3"], "A"), ...], seed=0)

Pure functions over pandas/numpy data: no database, no Gradio, no models. Every random draw comes from
the explicit seed or `numpy.random.Generator` passed in, so a result is reproducible.

What this module does not know: who may see contestant names (callers decide), which rows belong to a
session (esllm/study/results.py selects them), and whether a rater rated a unit twice (the store's UNIQUE keys
rule that out; duplicated (item, contestant, rater, criterion) rows here would count as separate ratings).

Bootstraps are percentile bootstraps. Resampling m items with replacement from a cell is drawn as a
multinomial over the cell's distinct item scores (counts ~ Multinomial(m, share of each value)): the
same distribution as drawing item indices, at a cost that does not grow with m. Category-typed string
columns (what results.session_scores_frame returns) are read through their codes; plain strings are hashed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

PROMEDIO = "Promedio"
SCORE_COLUMNS = ("item", "category", "contestant", "rater", "criterion", "value")
VOTE_CHOICES = ("A", "B", "C", "tie", "all_bad")

Seed = Union[int, np.random.Generator]


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"score frame lacks columns {missing}; expected {list(SCORE_COLUMNS)}")


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


def _codes(col: pd.Series) -> tuple[np.ndarray, list]:
    """Integer codes and the distinct values in first-appearance order (cheap for a categorical column)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        raw = col.cat.codes.to_numpy()
        seen = pd.unique(raw)
        remap = np.full(len(col.cat.categories) + 1, -1, dtype=np.int64)
        remap[seen] = np.arange(len(seen))
        return remap[raw], [col.cat.categories[i] for i in seen]
    codes, uniques = pd.factorize(col)
    return codes.astype(np.int64), list(uniques)


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


def _criterion_rows(df: pd.DataFrame, criterion: str) -> pd.DataFrame:
    _check_columns(df)
    col = df["criterion"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        mask = col.cat.codes.to_numpy() == (cats.get_loc(criterion) if criterion in cats else -2)
    else:
        mask = (col == criterion).to_numpy()
    return df if mask.all() else df[mask]


def _units(df: pd.DataFrame, criterion: str) -> _Units:
    d = _criterion_rows(df, criterion)
    cat, categories = _codes(d["category"])
    con, contestants = _codes(d["contestant"])
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
    rng = _rng(seed)
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


# ---------------------------------------------------------------- Krippendorff's alpha

@dataclass(frozen=True)
class Agreement:
    alpha: float  # NaN when undefined (no pairable values, or a single value observed)
    units: int  # (item, contestant) units with >= 2 ratings
    values: int  # ratings in those units


def _dense(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, index of each entry among them); by bincount for ints of a small range."""
    if x.size and np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if hi - lo <= 4 * x.size + 1024:
            present = np.bincount(x - lo, minlength=hi - lo + 1) > 0
            index = np.cumsum(present) - 1
            return np.flatnonzero(present) + lo, index[x - lo]
    return np.unique(x, return_inverse=True)


def coincidences(units: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Krippendorff's coincidence matrix over the pairable units.

    units, values: one entry per rating (any hashable codes / ordered numbers). Returns (o, domain,
    pairable units) where o[c, k] sums, over units with m_u >= 2 ratings, n_uc * (n_uk - [c == k]) / (m_u - 1).
    """
    domain, v = _dense(np.asarray(values))
    _, u = _dense(np.asarray(units))
    n_units, n_vals = int(u.max(initial=-1)) + 1, len(domain)
    counts = np.bincount(u * n_vals + v, minlength=n_units * n_vals).reshape(n_units, n_vals).astype(float)
    m = counts.sum(axis=1)
    keep = m >= 2
    counts, m = counts[keep], m[keep]
    w = counts / (m - 1)[:, None]
    o = w.T @ counts - np.diag(w.sum(axis=0))
    return o, domain, int(keep.sum())


def ordinal_delta2(marginals: np.ndarray) -> np.ndarray:
    """Ordinal squared distance: δ²(c, k) = (Σ_{g=c..k} n_g − (n_c + n_k)/2)², n_g the value marginals."""
    cum = np.concatenate([[0.0], np.cumsum(marginals)])
    i = np.arange(len(marginals))
    lo, hi = np.minimum.outer(i, i), np.maximum.outer(i, i)
    between = cum[hi + 1] - cum[lo]
    return (between - (marginals[:, None] + marginals[None, :]) / 2) ** 2


def alpha_ordinal(units: np.ndarray, values: np.ndarray) -> Agreement:
    """Krippendorff's alpha, ordinal metric, from parallel arrays (one entry per rating)."""
    if len(values) == 0:
        return Agreement(math.nan, 0, 0)
    o, _, n_units = coincidences(units, values)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    d2 = ordinal_delta2(n_c)
    expected = (np.outer(n_c, n_c) * d2).sum()
    if n_units == 0 or expected == 0:
        return Agreement(math.nan, n_units, int(round(n)))
    return Agreement(float(1 - (n - 1) * (o * d2).sum() / expected), n_units, int(round(n)))


def krippendorff_alpha_ordinal(df: pd.DataFrame, criterion: str = "general") -> Agreement:
    """Alpha over one criterion: units = (item, contestant), coders = raters, values 1..5; units rated
    once are not pairable and drop out (`Agreement.units` counts the ones that stay)."""
    d = _criterion_rows(df, criterion)
    item_code = pd.factorize(d["item"])[0].astype(np.int64)
    con_code, con_names = _codes(d["contestant"])
    units = item_code * max(len(con_names), 1) + con_code
    return alpha_ordinal(units, d["value"].to_numpy())


# ---------------------------------------------------------------- Bradley–Terry

@dataclass(frozen=True)
class Rating:
    contestant: str
    rating: float
    ci_low: float
    ci_high: float
    n_votes: int  # votes in which this contestant was shown


@dataclass
class BTResult:
    """Ratings on an Elo-like scale, best first: 400·log10(strength), shifted so their mean is 1000.

    A 400-point gap means the stronger one wins 10 of 11 comparisons; CIs are 95% percentile bootstraps
    over votes. `n_boot` replicates; `n_votes` votes in all.
    """

    ratings: list[Rating]
    n_votes: int
    n_boot: int

    def rows(self) -> list[dict]:
        return [{"concursante": r.contestant, "elo": r.rating, "ic95_inf": r.ci_low, "ic95_sup": r.ci_high,
                 "votos": r.n_votes} for r in self.ratings]


def _pair_wins(shown: Sequence[str], choice: str, index: dict[str, int], k: int) -> np.ndarray:
    """Wins matrix of one vote: W[i, j] = wins of i over j. A pick beats each other shown one; "tie" and
    "all_bad" give every shown pair half a win each way."""
    w = np.zeros((k, k))
    ids = [index[str(n)] for n in shown]
    if choice in ("tie", "all_bad"):
        for a in ids:
            for b in ids:
                if a != b:
                    w[a, b] += 0.5
        return w
    pos = "ABC".index(choice)
    if pos >= len(ids):
        raise ValueError(f"vote {choice!r} but only {len(ids)} answers shown")
    for j, b in enumerate(ids):
        if j != pos:
            w[ids[pos], b] += 1.0
    return w


def _fit_bt(wins: np.ndarray, prior: float, iters: int = 10000, tol: float = 1e-10) -> np.ndarray:
    """Strengths by Hunter's MM updates, vectorised over a leading batch axis: wins (B, k, k) -> (B, k),
    geometric mean 1.

    The prior: each contestant gets `prior` virtual games in all, ties spread evenly over the others (half a
    win each way), so an unbeaten or winless contestant keeps a finite strength and the fit converges."""
    k = wins.shape[1]
    if k > 1:
        wins = wins + (prior / (k - 1) / 2) * (1 - np.eye(k))
    comps = wins + np.swapaxes(wins, 1, 2)
    w_tot = wins.sum(axis=2)
    p = np.ones(wins.shape[:2])
    for _ in range(iters):
        new = w_tot / (comps / (p[:, :, None] + p[:, None, :])).sum(axis=2)
        new /= np.exp(np.log(new).mean(axis=1, keepdims=True))  # the likelihood ignores a common factor
        if np.max(np.abs(np.log(new) - np.log(p))) < tol:
            return new
        p = new
    return p


def bradley_terry(votes: Sequence[tuple[Sequence[str], str]], *, seed: Seed = 0, n_boot: int = 1000,
                  prior: float = 1.0) -> BTResult:
    """Bradley–Terry ratings from Comparar votes: (names shown as A, B[, C], choice in A|B|C|tie|all_bad).

    "tie" and "all_bad" are both read as a draw among all the shown answers (half a win each way per pair):
    neither says one answer beat another. CIs resample whole votes (identical votes are grouped and drawn as a
    multinomial, which is the same distribution).
    """
    rng = _rng(seed)
    names = sorted({str(n) for shown, _ in votes for n in shown})
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    if not votes:
        return BTResult([], 0, n_boot)
    kinds: dict[tuple[tuple[str, ...], str], int] = {}
    for shown, choice in votes:
        if choice not in VOTE_CHOICES:
            raise ValueError(f"unknown vote choice {choice!r}; expected one of {VOTE_CHOICES}")
        if len(shown) < 2 or len(set(shown)) != len(shown):
            raise ValueError(f"a vote needs two or more different contestants shown, got {list(shown)}")
        key = (tuple(str(n) for n in shown), choice)
        kinds[key] = kinds.get(key, 0) + 1
    keys = list(kinds)
    per_kind = np.stack([_pair_wins(sh, ch, index, k) for sh, ch in keys])  # (K, k, k)
    counts = np.array([kinds[x] for x in keys], dtype=float)
    shown_n = np.zeros(k, dtype=int)
    for (shown, _), c in kinds.items():
        for n in shown:
            shown_n[index[n]] += c

    def elo(p: np.ndarray) -> np.ndarray:
        r = 400 * np.log10(p)
        return r - r.mean(axis=-1, keepdims=True) + 1000

    point = elo(_fit_bt(np.tensordot(counts, per_kind, axes=1)[None], prior))[0]
    draws = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=n_boot).astype(float)
    boot = elo(_fit_bt(np.tensordot(draws, per_kind, axes=1), prior))
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    ratings = [Rating(names[i], float(point[i]), float(lo[i]), float(hi[i]), int(shown_n[i])) for i in range(k)]
    ratings.sort(key=lambda r: -r.rating)
    return BTResult(ratings, int(counts.sum()), n_boot)
