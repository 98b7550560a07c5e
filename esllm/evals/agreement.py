"""Agreement between a judge model and the human raters of a session, from the score frames of
esllm/study/results.py (columns item, category, contestant, rater, criterion, value). Pure: no database.

    humans = session_scores_frame(s, sid)                       # human raters only
    judge = session_scores_frame(s, sid, who="judges")          # filter one judge's rows
    ag = judge_agreement(humans, judge[judge.rater == "juez-gemma-base"], criterion="general")

Definitions (a unit is one (item, contestant, criterion); only units the judge scored AND at least one
human scored count, the others are left out of every figure):
* n: those units.
* exact %, within-one %: the judge's score on a unit is paired with every human score on that unit
  (a unit with three human scores gives three pairs); the share of pairs with equal values, and with
  |difference| <= 1, over all pairs (`pairs`), in percent. Units weigh by their number of raters.
* spearman: Spearman's rank correlation between the judge's score and the mean of the human scores per
  unit, over the n units (average ranks for ties, then Pearson on the ranks); NaN with fewer than two
  units or when either side is constant.
* alpha: Krippendorff's alpha (ordinal) over the n units with the judge as one more coder beside the
  humans (esllm.study.stats.alpha_ordinal); `alpha_humans` is the same over the same units without the judge,
  the baseline it should be read against (NaN where no unit has two human scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from esllm.study.krippendorff import alpha_ordinal
from esllm.study.score_frame import SCORE_COLUMNS

UNIT = ["item", "contestant", "criterion"]


@dataclass(frozen=True)
class JudgeAgreement:
    n: int  # units (item, contestant, criterion) scored by the judge and by >= 1 human
    pairs: int  # (judge score, human score) pairs behind exact and within_one
    exact: float  # % of pairs with equal scores (NaN without pairs)
    within_one: float  # % of pairs differing by at most one point
    spearman: float  # judge score vs human mean per unit
    alpha: float  # Krippendorff's alpha (ordinal), humans + judge as coders, over the n units
    alpha_humans: float  # the same units, humans only

    def as_dict(self) -> dict:
        """JSON-safe (NaN -> None), for EvalRun.metrics."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


NO_AGREEMENT = JudgeAgreement(0, 0, math.nan, math.nan, math.nan, math.nan, math.nan)


def _plain(df: pd.DataFrame, criterion: Optional[str]) -> pd.DataFrame:
    missing = [c for c in SCORE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"score frame lacks columns {missing}; expected {list(SCORE_COLUMNS)}")
    d = pd.DataFrame({c: df[c].astype(str).to_numpy() for c in UNIT + ["rater"]})
    d["value"] = df["value"].to_numpy(dtype=float)
    return d if criterion is None else d[d["criterion"] == criterion]


def spearman(x, y) -> float:
    """Spearman's rho: Pearson correlation of average ranks (ties share the mean of their ranks)."""
    rx = pd.Series(np.asarray(x, dtype=float)).rank(method="average").to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank(method="average").to_numpy()
    if len(rx) < 2:
        return math.nan
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / den) if den > 0 else math.nan


def judge_agreement(humans: pd.DataFrame, judge: pd.DataFrame, criterion: Optional[str] = None) -> JudgeAgreement:
    """Agreement of one judge (`judge`: its rows only) with the humans; `criterion` None = every criterion
    the judge scored, pooled (the criterion is part of the unit). See the module docstring."""
    h, j = _plain(humans, criterion), _plain(judge, criterion)
    if j["rater"].nunique() > 1:
        raise ValueError(f"judge frame holds several raters: {sorted(j['rater'].unique())}; pass one judge's rows")
    if j.duplicated(UNIT).any():
        raise ValueError("judge frame has two scores for one (item, contestant, criterion)")
    m = h.merge(j[UNIT + ["value"]].rename(columns={"value": "judge"}), on=UNIT)  # one row per pair
    if m.empty:
        return NO_AGREEMENT
    diff = (m["value"] - m["judge"]).abs()
    per_unit = m.groupby(UNIT, sort=False).agg(human=("value", "mean"), judge=("judge", "first"))
    # Alpha: every human score of the n units plus one judge score per unit, unit codes 0..n-1.
    group = m.groupby(UNIT, sort=False).ngroup()
    codes = group.to_numpy()
    first = m.drop_duplicates(UNIT)
    units = np.concatenate([codes, group.loc[first.index].to_numpy()])
    values = np.concatenate([m["value"].to_numpy(), first["judge"].to_numpy()]).round().astype(np.int64)
    return JudgeAgreement(
        n=len(per_unit), pairs=len(m),
        exact=float(100 * (diff == 0).mean()), within_one=float(100 * (diff <= 1).mean()),
        spearman=spearman(per_unit["judge"], per_unit["human"]),
        alpha=alpha_ordinal(units, values).alpha,
        alpha_humans=alpha_ordinal(codes, m["value"].to_numpy().round().astype(np.int64)).alpha)
