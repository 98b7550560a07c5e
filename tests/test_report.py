"""The study's aggregation (esllm/study/stats.py): Promedio, bootstrap CIs, Krippendorff's alpha, Bradley–Terry."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pandas as pd
import pytest

from esllm.study.bradley_terry import bradley_terry
from esllm.study.krippendorff import alpha_ordinal, krippendorff_alpha_ordinal
from esllm.study.stats import PROMEDIO, display_frame, promedio, study_table, table_rows

# The study's category means (its Table 4) and its Promedio row.
STUDY = {
    "LLaMA-2-chat": ([3.4, 4.11, 3.2, 3.76], 3.6175),
    "Mistral": ([4, 4.11, 4, 4], 4.0275),
    "Falcon": ([3.2, 3.25, 5, 3.36], 3.7025),
}
CATEGORIES = ["comprension_basica", "tareas_complejas", "creativas", "contextual"]


def frame(rows):
    return pd.DataFrame(rows, columns=["item", "category", "contestant", "rater", "criterion", "value"])


def scores_with_mean(m: float, n: int = 100) -> list[int]:
    """n integer scores whose mean is exactly m (m * n must be an integer)."""
    low = math.floor(m)
    k = round((m - low) * n)
    return [low + 1] * k + [low] * (n - k)


def test_promedio_helper_reproduces_the_study():
    for means, expected in STUDY.values():
        assert promedio(means) == pytest.approx(expected, abs=1e-12)
    assert promedio({"a": 1.0, "b": math.nan, "c": 3.0}) == 2.0


def test_study_table_reproduces_the_study_promedio():
    rows = []
    for con, (means, _) in STUDY.items():
        for cat, m in zip(CATEGORIES, means):
            for i, v in enumerate(scores_with_mean(m)):
                # two raters per item, who agree: the item score is v
                rows += [(f"{cat}-{i}", cat, con, r, "general", v) for r in ("r1", "r2")]
    rows.append(("x", "creativas", "Falcon", "r1", "exactitud", 1))  # another criterion: ignored
    t = study_table(frame(rows), seed=1, n_boot=200)
    assert t.categories == CATEGORIES and t.contestants == list(STUDY)
    for con, (means, expected) in STUDY.items():
        for cat, m in zip(CATEGORIES, means):
            c = t.cell(cat, con)
            assert c.mean == pytest.approx(m) and c.n == 100 and c.n_scores == 200
        prom = t.cell(PROMEDIO, con)
        assert prom.mean == pytest.approx(expected, abs=1e-12)
        assert prom.n == 400 and prom.ci_low <= prom.mean <= prom.ci_high
    falcon_creativas = t.cell("creativas", "Falcon")  # all fives: nothing to resample
    assert (falcon_creativas.ci_low, falcon_creativas.ci_high) == (5.0, 5.0)


HAND = frame([
    # category a, contestant x: item 1 rated 4 and 5 (item score 4.5), item 2 rated 3 -> mean 3.75
    (1, "a", "x", "r1", "general", 4), (1, "a", "x", "r2", "general", 5), (2, "a", "x", "r1", "general", 3),
    # category b, contestant x: three items all rated 2 -> mean 2, CI [2, 2]
    (3, "b", "x", "r1", "general", 2), (4, "b", "x", "r2", "general", 2), (5, "b", "x", "r1", "general", 2),
    # contestant y only in category b: items 3 and 4 rated 1 and 5
    (3, "b", "y", "r1", "general", 1), (4, "b", "y", "r2", "general", 5),
    (1, "a", "x", "r1", "exactitud", 1),
])


def test_means_cis_and_n_on_a_hand_made_table():
    t = study_table(HAND, seed=3, n_boot=2000)
    assert t.categories == ["a", "b"] and t.contestants == ["x", "y"]
    ax = t.cell("a", "x")
    assert (ax.mean, ax.n, ax.n_scores) == (3.75, 2, 3)
    # resampling two items {3, 4.5}: means 3, 3.75, 4.5 with chances 1/4, 1/2, 1/4 -> 2.5 % and 97.5 % are 3, 4.5
    assert (ax.ci_low, ax.ci_high) == (3.0, 4.5)
    bx = t.cell("b", "x")
    assert (bx.mean, bx.ci_low, bx.ci_high, bx.n, bx.n_scores) == (2.0, 2.0, 2.0, 3, 3)
    assert t.cell("a", "y") is None
    px = t.cell(PROMEDIO, "x")
    assert px.mean == (3.75 + 2.0) / 2 and px.n == 5 and px.n_scores == 6
    # Promedio CI: category b is constant, so the bounds are (3 + 2) / 2 and (4.5 + 2) / 2
    assert (px.ci_low, px.ci_high) == (2.5, 3.25)
    py = t.cell(PROMEDIO, "y")
    assert py.mean == 3.0 and py.n == 2  # over the one category y has
    only_aspect = study_table(HAND, "exactitud", seed=0, n_boot=10)
    assert only_aspect.cell("a", "x").mean == 1.0 and only_aspect.cell("a", "x").n == 1

    rows = table_rows(t)
    assert [(r["categoria"], r["concursante"]) for r in rows] == [
        ("a", "x"), ("b", "x"), ("b", "y"), (PROMEDIO, "x"), (PROMEDIO, "y")]
    assert rows[0] == {"criterio": "general", "categoria": "a", "concursante": "x", "media": 3.75, "ic95_inf": 3.0,
                       "ic95_sup": 4.5, "n": 2, "n_puntuaciones": 3}
    shown = display_frame(t)
    assert list(shown.columns) == ["Categoría", "x", "y"]
    assert shown.iloc[0].tolist() == ["a", "3.75 [3.00–4.50] n=2", "—"]
    # as a screen shows it: rows by their labels, in the prompt set's order, Promedio last
    named = display_frame(t, labels={"a": "Simples", "b": "Complejas"}, order=["b", "a"])
    assert named["Categoría"].tolist() == ["Complejas", "Simples", PROMEDIO]
    assert named.iloc[1].tolist() == ["Simples", "3.75 [3.00–4.50] n=2", "—"]


def test_bootstrap_is_seeded_and_matches_resampling_items():
    rng = np.random.default_rng(0)
    vals = rng.integers(1, 6, size=40)
    df = frame([(i, "c", "x", "r", "general", int(v)) for i, v in enumerate(vals)])
    a, b = study_table(df, seed=7), study_table(df, seed=7)
    assert a.cells == b.cells
    other = study_table(df, seed=8).cell("c", "x")
    assert (other.ci_low, other.ci_high) != (a.cell("c", "x").ci_low, a.cell("c", "x").ci_high)
    c = study_table(df, seed=np.random.default_rng(1), n_boot=20000).cell("c", "x")
    # the textbook way: draw item indices with replacement
    idx = np.random.default_rng(2).integers(0, len(vals), size=(20000, len(vals)))
    lo, hi = np.percentile(vals[idx].mean(axis=1), [2.5, 97.5])
    assert c.ci_low < vals.mean() < c.ci_high
    assert abs(c.ci_low - lo) < 0.05 and abs(c.ci_high - hi) < 0.05


def test_alpha_on_a_hand_computed_example():
    # units (item, contestant); u4 has one rating and is not pairable.
    df = frame([(1, "c", "x", "r1", "general", 1), (1, "c", "x", "r2", "general", 1),
                (2, "c", "x", "r1", "general", 1), (2, "c", "x", "r2", "general", 2),
                (1, "c", "y", "r1", "general", 3), (1, "c", "y", "r2", "general", 3),
                (2, "c", "y", "r1", "general", 2)])
    # coincidences: o11 = 2, o12 = o21 = 1, o33 = 2; n1 = 3, n2 = 1, n3 = 2, n = 6
    # ordinal δ²: (1,2) = ((3+1)/2)² = 4; (1,3) = (6 - 5/2)² = 12.25; (2,3) = ((1+2)/2)² = 2.25
    # observed Σ o δ² = 2·1·4 = 8; expected Σ n_c n_k δ² = 2·(3·1·4 + 3·2·12.25 + 1·2·2.25) = 180
    # alpha = 1 - (n - 1) · 8 / 180 = 7/9
    a = krippendorff_alpha_ordinal(df)
    assert a.alpha == pytest.approx(7 / 9, abs=1e-12) and (a.units, a.values) == (3, 6)
    data = np.array([[1, 1, 3, 2], [1, 2, 3, np.nan]])  # raters × units
    assert krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal") == pytest.approx(7 / 9)


def test_alpha_undefined_cases_are_nan():
    one_each = frame([(i, "c", "x", f"r{i}", "general", 3) for i in range(4)])
    assert math.isnan(krippendorff_alpha_ordinal(one_each).alpha) and krippendorff_alpha_ordinal(one_each).units == 0
    same = frame([(i, "c", "x", r, "general", 4) for i in range(3) for r in ("r1", "r2")])
    assert math.isnan(krippendorff_alpha_ordinal(same).alpha)
    assert math.isnan(alpha_ordinal(np.array([]), np.array([])).alpha)


@pytest.mark.parametrize("seed", range(6))
def test_alpha_equals_the_krippendorff_package(seed):
    rng = np.random.default_rng(seed)
    raters, n_items = int(rng.integers(2, 7)), int(rng.integers(5, 40))
    contestants = ["x", "y", "z"]
    truth = rng.integers(1, 6, size=(n_items, 3))
    noise = rng.integers(-(seed % 3), seed % 3 + 1, size=(raters, n_items, 3))
    values = np.clip(truth[None] + noise, 1, 5).astype(float)
    values[rng.random(values.shape) < 0.35] = np.nan
    if seed == 5:
        values[values == 4] = 5  # a value domain with a gap
    rows = [(i, "c", contestants[c], f"r{r}", "general", int(values[r, i, c]))
            for r in range(raters) for i in range(n_items) for c in range(3) if not np.isnan(values[r, i, c])]
    ours = krippendorff_alpha_ordinal(frame(rows)).alpha
    ref = krippendorff.alpha(reliability_data=values.reshape(raters, -1), level_of_measurement="ordinal")
    assert ours == pytest.approx(ref, abs=1e-10)


def synthetic_votes(strength: dict[str, float], n: int, seed: int) -> list:
    """Each vote shows 3 contestants; the pick follows Luce's choice rule; every 10th vote is a tie."""
    rng = np.random.default_rng(seed)
    names = list(strength)
    votes = []
    for v in range(n):
        shown = [str(x) for x in rng.choice(names, 3, replace=False)]
        if v % 10 == 9:
            votes.append((shown, "tie" if v % 20 == 9 else "all_bad"))
            continue
        p = np.array([strength[x] for x in shown])
        votes.append((shown, "ABC"[rng.choice(3, p=p / p.sum())]))
    return votes


def test_bradley_terry_recovers_the_order_of_known_strengths():
    elo = {"d": 0, "a": 100, "c": 250, "b": 400, "e": 550}
    strength = {k: 10 ** (v / 400) for k, v in elo.items()}
    res = bradley_terry(synthetic_votes(strength, 4000, seed=0), seed=0, n_boot=300)
    assert [r.contestant for r in res.ratings] == ["e", "b", "c", "a", "d"]
    assert np.mean([r.rating for r in res.ratings]) == pytest.approx(1000)
    assert res.n_votes == 4000 and sum(r.n_votes for r in res.ratings) == 3 * 4000
    for r in res.ratings:
        assert r.ci_low < r.rating < r.ci_high
    assert res.rows()[0].keys() == {"concursante", "elo", "ic95_inf", "ic95_sup", "votos"}
    again = bradley_terry(synthetic_votes(strength, 4000, seed=0), seed=0, n_boot=300)
    assert again.ratings == res.ratings


def test_bradley_terry_small_cases():
    # an unbeaten contestant stays finite; a pairwise show (two names) works; ties give equal ratings
    res = bradley_terry([(["x", "y"], "A")] * 5 + [(["y", "z"], "A")] * 3, seed=0, n_boot=50)
    assert [r.contestant for r in res.ratings] == ["x", "y", "z"]
    assert all(math.isfinite(r.rating) for r in res.ratings)
    tie = bradley_terry([(["p", "q", "r"], "tie"), (["r", "q", "p"], "all_bad")], seed=0, n_boot=20)
    assert [r.rating for r in tie.ratings] == pytest.approx([1000, 1000, 1000])
    assert bradley_terry([], seed=0).ratings == []
    with pytest.raises(ValueError):
        bradley_terry([(["x", "y"], "C")])
    with pytest.raises(ValueError):
        bradley_terry([(["x", "y"], "maybe")])


def test_categorical_columns_give_the_same_numbers():
    """results.session_scores_frame hands over category-typed columns; plain strings must agree with them."""
    rng = np.random.default_rng(4)
    rows = [(int(i), f"cat{i % 3}", f"m{c}", f"r{r}", crit, int(rng.integers(1, 6)))
            for i in range(30) for c in range(3) for r in rng.choice(5, 2, replace=False)
            for crit in ("general", "exactitud")]
    plain = frame(rows)
    typed = plain.astype({c: "category" for c in ("category", "contestant", "rater", "criterion")})
    for crit in ("general", "exactitud"):
        a, b = study_table(plain, crit, seed=9, n_boot=300), study_table(typed, crit, seed=9, n_boot=300)
        assert a == b and a.categories == ["cat0", "cat1", "cat2"] and a.cell("cat0", "m0").n == 10
        assert krippendorff_alpha_ordinal(plain, crit) == krippendorff_alpha_ordinal(typed, crit)
    assert study_table(typed, "relevancia").cells == {}
    assert study_table(plain.iloc[:0]).cells == {}
