"""Krippendorff's alpha, ordinal metric, for the study's ratings: how far raters agree beyond chance.

    alpha = krippendorff_alpha_ordinal(df)       # units = (item, contestant), coders = raters
    alpha.alpha, alpha.units, alpha.values

Pure functions over numpy/pandas data (the score frame of esllm/study/score_frame.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from esllm.study.score_frame import criterion_rows, value_codes


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
    d = criterion_rows(df, criterion)
    item_code = pd.factorize(d["item"])[0].astype(np.int64)
    con_code, con_names = value_codes(d["contestant"])
    units = item_code * max(len(con_names), 1) + con_code
    return alpha_ordinal(units, d["value"].to_numpy())
