"""The score frame the study's statistics read, and the seed they draw from: its columns, one criterion's
rows, integer codes for its string columns, and an int seed or a `numpy.random.Generator` as a Generator.

Shared by esllm/study/stats.py (the study table), krippendorff.py (alpha) and bradley_terry.py. A score frame
has one row per single rating: item, category, contestant, rater, criterion, value (what
results.session_scores_frame returns). Category-typed string columns are read through their codes; plain
strings are hashed.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import pandas as pd

SCORE_COLUMNS = ("item", "category", "contestant", "rater", "criterion", "value")

Seed = Union[int, np.random.Generator]


def as_generator(seed: Seed) -> np.random.Generator:
    """The Generator passed in, or a new one from an int seed."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def check_columns(df: pd.DataFrame) -> None:
    """ValueError naming the missing columns, if any of SCORE_COLUMNS is not in `df`."""
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"score frame lacks columns {missing}; expected {list(SCORE_COLUMNS)}")


def value_codes(col: pd.Series) -> tuple[np.ndarray, list]:
    """Integer codes and the distinct values in first-appearance order (cheap for a categorical column)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        raw = col.cat.codes.to_numpy()
        seen = pd.unique(raw)
        remap = np.full(len(col.cat.categories) + 1, -1, dtype=np.int64)
        remap[seen] = np.arange(len(seen))
        return remap[raw], [col.cat.categories[i] for i in seen]
    codes, uniques = pd.factorize(col)
    return codes.astype(np.int64), list(uniques)


def criterion_rows(df: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """The rows of one criterion (all of `df` when it has no other), after checking the columns."""
    check_columns(df)
    col = df["criterion"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        mask = col.cat.codes.to_numpy() == (cats.get_loc(criterion) if criterion in cats else -2)
    else:
        mask = (col == criterion).to_numpy()
    return df if mask.all() else df[mask]
