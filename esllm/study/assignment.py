"""Blind assignment for rating sessions: who rates which item, in which order, under which labels.

Pure functions: they take ids and an explicit `random.Random` and return data, so they are tested
without a database. The store persists what they return (each assignment's own permutation), so a
restart never reshuffles anything.

* `assign_items`: every item is rated by exactly `k` distinct raters and rater loads differ by at
  most one unit; a contextual series (all turns of one conversation) is one unit, rated whole by the
  same raters, turns in order.
* `label_permutations`: A/B/C -> contestant mappings drawn in shuffled blocks of all 3! orders, so
  over many items every contestant sits under every label almost equally often; `plan_session`
  balances the same way at item level, a series' turns sharing one mapping.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

from esllm import EsllmError
from esllm.store.models import LABELS


@dataclass(frozen=True)
class Item:
    id: Hashable
    series: Optional[str] = None  # items sharing a series are one unit, rated in `turn` order
    turn: Optional[int] = None


def units(items: Sequence[Item]) -> list[list[Item]]:
    """Group items into rating units: one per standalone item, one per series (sorted by turn)."""
    series: dict[str, list[Item]] = {}
    out: list[list[Item]] = []
    for it in items:
        if it.series is None:
            out.append([it])
        else:
            if it.series not in series:
                series[it.series] = []
                out.append(series[it.series])
            series[it.series].append(it)
    for group in series.values():
        group.sort(key=lambda i: (i.turn or 0))
    return out


def assign_items(items: Sequence[Item], raters: Sequence[Hashable], k: int, rng: random.Random) -> dict[Hashable, list[Hashable]]:
    """rater -> item ids in the order that rater will see them."""
    raters = list(dict.fromkeys(raters))
    if not raters:
        raise EsllmError("La sesión necesita al menos un evaluador.")
    if not 1 <= k <= len(raters):
        raise EsllmError(f"El solapamiento k={k} debe estar entre 1 y el número de evaluadores ({len(raters)}).")
    if len({it.id for it in items}) != len(items):
        raise EsllmError("Hay ítems repetidos en el conjunto.")
    groups = units(items)
    rng.shuffle(groups)
    load = {r: 0 for r in raters}
    given: dict[Hashable, list[list[Item]]] = {r: [] for r in raters}
    # Big units first, each to the k least-loaded raters (ties at random): loads stay within one unit.
    for group in sorted(groups, key=len, reverse=True):
        order = sorted(raters, key=lambda r: (load[r], rng.random()))
        for r in order[:k]:
            given[r].append(group)
            load[r] += len(group)
    out = {}
    for r in raters:
        mine = given[r]
        rng.shuffle(mine)
        out[r] = [it.id for g in mine for it in g]
    return out


def label_permutations(n: int, contestants: Sequence[Hashable], rng: random.Random) -> list[dict[str, Hashable]]:
    """n mappings {"A": c, "B": c, "C": c}; shuffled blocks of all orders keep positions balanced."""
    if len(contestants) != len(LABELS) or len(set(contestants)) != len(LABELS):
        raise EsllmError("Una sesión compara exactamente tres concursantes distintos.")
    perms = list(itertools.permutations(contestants))
    out: list[dict[str, Hashable]] = []
    while len(out) < n:
        block = perms[:]
        rng.shuffle(block)
        out.extend(dict(zip(LABELS, p)) for p in block)
    return out[:n]


def plan_session(items: Sequence[Item], raters: Sequence[Hashable], contestants: Sequence[Hashable], k: int,
                 rng: random.Random) -> list[tuple[Hashable, Hashable, int, dict[str, Hashable]]]:
    """(rater, item id, order index, permutation) for every assignment of a new session.

    Turns of one series share one permutation for a given rater, so "Modelo A" stays the same
    contestant through a conversation.
    """
    per_rater = assign_items(items, raters, k, rng)
    series_of = {it.id: it.series for it in items}
    sizes: dict[tuple[Hashable, Hashable], int] = {}  # (rater, unit key) -> items in the unit
    for r, ids in per_rater.items():
        for i in ids:
            key = (r, series_of[i] if series_of[i] is not None else ("item", i))
            sizes[key] = sizes.get(key, 0) + 1
    keys = list(sizes)
    rng.shuffle(keys)
    keys.sort(key=lambda kk: -sizes[kk])  # stable: big units first, random order within a size
    # Greedy balance at item level: each unit takes the order whose labels are least used so far
    # (ties at random), counting a series' turns, which share one order.
    used = {(label, c): 0 for label in LABELS for c in contestants}
    orders = list(itertools.permutations(contestants))
    if len(contestants) != len(LABELS) or len(set(contestants)) != len(LABELS):
        raise EsllmError("Una sesión compara exactamente tres concursantes distintos.")
    perms: dict[tuple[Hashable, Hashable], dict[str, Hashable]] = {}
    for key in keys:
        best = min(orders, key=lambda o: (sum(used[(label, c)] for label, c in zip(LABELS, o)), rng.random()))
        perms[key] = dict(zip(LABELS, best))
        for label, c in zip(LABELS, best):
            used[(label, c)] += sizes[key]
    plan = []
    for r, ids in per_rater.items():
        for idx, i in enumerate(ids):
            key = (r, series_of[i] if series_of[i] is not None else ("item", i))
            plan.append((r, i, idx, perms[key]))
    return plan
