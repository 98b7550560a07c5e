"""Bradley–Terry ratings from «Comparar» votes, on an Elo-like scale with percentile-bootstrap CIs.

    bt = bradley_terry([(["m1", "m2", "m3"], "A"), ...], seed=0)   # shown as A, B[, C]; choice A|B|C|tie|all_bad
    bt.ratings, bt.rows()

Pure functions over plain data: every random draw comes from the explicit seed or `numpy.random.Generator`
passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from esllm.study.score_frame import Seed, as_generator

VOTE_CHOICES = ("A", "B", "C", "tie", "all_bad")


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
    rng = as_generator(seed)
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
