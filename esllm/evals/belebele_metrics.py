"""Belebele's metrics, the same for both modes: accuracy with a 95% bootstrap CI, how often each letter was
predicted, and the ties between choices.

    metrics = choice_metrics(details, seconds)     # details: one dict per item with "predicted", "ok", "tie"
    acc, low, high = accuracy_ci([True, False, True])
    pred, tie = best_choice([-1.2, -0.7, -0.7, -3.0])   # (1, True): a tie goes to the earlier choice

Chance is 25% (four options). A tie is two or more choices with the very same best score: the earlier
letter wins, as numpy's argmax (and lm-evaluation-harness) does, and `ties` counts them so a table can say
how many predictions the order of the letters decided.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from esllm import EsllmError

LETTERS = ("A", "B", "C", "D")
CHANCE = 0.25


def best_choice(scores: Sequence[float]) -> tuple[int, bool]:
    """(index of the best score, whether another choice has the very same score); ties to the earlier index."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best, sum(s == scores[best] for s in scores) > 1


def accuracy_ci(correct: Sequence[bool], *, seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """(accuracy, low, high): the share correct with a 95% percentile-bootstrap CI over items.

    Resampling n items with replacement and counting the correct ones is a Binomial(n, accuracy) draw,
    so the replicates are drawn as that (same distribution, no n × n_boot matrix)."""
    n = len(correct)
    if n == 0:
        raise EsllmError("No hay ítems: no se puede calcular la exactitud.")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    acc = sum(bool(c) for c in correct) / n
    boot = np.random.default_rng(seed).binomial(n, acc, size=n_boot) / n
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return acc, float(lo), float(hi)


def choice_metrics(details: Sequence[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """A run's summary from its per-item details: accuracy and its CI, correct, n, chance, the predicted
    letters' counts (a model that always says "A" shows there), the ties and the seconds it took."""
    acc, lo, hi = accuracy_ci([d["ok"] for d in details])
    return {"accuracy": acc, "ci_low": lo, "ci_high": hi, "n": len(details),
            "correct": sum(bool(d["ok"]) for d in details), "chance": CHANCE,
            "predicted_counts": {L: sum(d["predicted"] == L for d in details) for L in LETTERS},
            "ties": sum(bool(d["tie"]) for d in details), "seconds": round(seconds, 2)}
