"""Blind assignment: coverage k, balanced loads and label positions, series kept whole, reproducible."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from esllm import EsllmError
from esllm.store.models import LABELS
from esllm.study.assignment import Item, assign_items, label_permutations, plan_session

ITEMS = [Item(f"p{i}") for i in range(25)] + [Item(f"s{s}t{t}", f"s{s}", t) for s in range(5) for t in (3, 1, 2, 5, 4)]


@pytest.mark.parametrize("n_raters, k", [(3, 1), (3, 2), (3, 3), (5, 2), (7, 3)])
def test_each_item_rated_exactly_k_times_by_distinct_raters(n_raters, k):
    raters = [f"r{i}" for i in range(n_raters)]
    got = assign_items(ITEMS, raters, k, random.Random(n_raters * 10 + k))
    per_item = Counter(i for ids in got.values() for i in ids)
    assert set(per_item) == {it.id for it in ITEMS}
    assert set(per_item.values()) == {k}
    assert all(len(set(ids)) == len(ids) for ids in got.values())
    loads = [len(ids) for ids in got.values()]
    assert max(loads) - min(loads) <= 5  # within one unit (a series is 5 items)


def test_series_stay_whole_and_in_turn_order():
    got = assign_items(ITEMS, ["a", "b", "c"], 2, random.Random(1))
    for ids in got.values():
        for s in range(5):
            turns = [i for i in ids if i.startswith(f"s{s}t")]
            if turns:
                assert turns == [f"s{s}t{t}" for t in (1, 2, 3, 4, 5)]
                start = ids.index(turns[0])
                assert ids[start:start + 5] == turns, "a series is rated in one sitting"


def test_order_is_random_per_rater_and_reproducible_with_seed():
    a = assign_items(ITEMS, ["a", "b", "c"], 3, random.Random(7))
    b = assign_items(ITEMS, ["a", "b", "c"], 3, random.Random(7))
    assert a == b
    assert a["a"] != a["b"] or a["b"] != a["c"]


def test_label_positions_are_balanced_over_many_items():
    perms = label_permutations(600, ["x", "y", "z"], random.Random(3))
    counts = Counter((label, p[label]) for p in perms for label in LABELS)
    assert all(sorted(p.values()) == ["x", "y", "z"] for p in perms)
    assert set(counts.values()) == {200}  # blocks of all 3! orders: exact when n is a multiple of 6
    odd = label_permutations(601, ["x", "y", "z"], random.Random(4))
    odd_counts = Counter((label, p[label]) for p in odd for label in LABELS)
    assert max(odd_counts.values()) - min(odd_counts.values()) <= 2


def test_plan_session_balanced_and_series_keep_one_permutation():
    plan = plan_session(ITEMS, ["a", "b", "c", "d"], ["x", "y", "z"], 2, random.Random(11))
    assert len(plan) == len(ITEMS) * 2
    pos = Counter((label, perm[label]) for _, _, _, perm in plan for label in LABELS)
    assert max(pos.values()) - min(pos.values()) <= 6, pos  # one series (5 turns) of slack
    by_series = {}
    for rater, item, _, perm in plan:
        if item.startswith("s"):
            by_series.setdefault((rater, item[:2]), set()).add(tuple(sorted(perm.items())))
    assert by_series and all(len(v) == 1 for v in by_series.values())


@pytest.mark.parametrize("raters, k, contestants, msg", [
    ([], 1, ["x", "y", "z"], "al menos un evaluador"),
    (["a", "b"], 3, ["x", "y", "z"], "solapamiento"),
    (["a"], 0, ["x", "y", "z"], "solapamiento"),
    (["a"], 1, ["x", "y"], "tres concursantes"),
    (["a"], 1, ["x", "x", "z"], "tres concursantes"),
])
def test_bad_sessions_are_refused(raters, k, contestants, msg):
    with pytest.raises(EsllmError, match=msg):
        plan_session(ITEMS, raters, contestants, k, random.Random(0))
