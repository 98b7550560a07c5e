"""Results-table benchmark: esllm/study/stats.py on about 1,000,000 score rows (issue target: under 2 s).

Run from the repository root (CPU only, nothing is downloaded, no database):

    PYTHONPATH=. python bench/bench_report.py                       # ~10 s on 2 cores
    PYTHONPATH=. python bench/bench_report.py --items 20000 --raters-per-item 5
    PYTHONPATH=. python bench/bench_report.py | tee bench/results/report_cpu.txt

Shape (default): a "general"-mode study grown far beyond the 50-item sets: 111,112 items in 4 categories
(27,778 each), 3 contestants, each item scored by k = 3 raters drawn from a pool of 200, so
111,112 × 3 × 3 = 1,000,008 rows; 333,336 (item, contestant) units for alpha, all pairable. Each score is
an item's hidden quality per contestant plus rater noise, clipped to 1..5, so alpha is neither 0 nor 1.

Timed: building the DataFrame from column arrays, with the string columns categorical (as
results.session_scores_frame returns them; the database query before it is not timed here),
study_table(df, "general", n_boot=2000) with its Promedio row, krippendorff_alpha_ordinal(df), and their
total against the 2 s target. Each timing is the best of --repeat runs (default 3), after one untimed
warm-up run, so the first-call cost of pandas is not in it. One more line times table + alpha once on the
same rows with plain `str` columns (pandas 3's default), where every string has to be hashed.

What it does not know: the training job or anything else running on the machine slows it (the load
average is printed); a real export also reads the rows from the database and writes CSV files.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime

import numpy as np
import pandas as pd

from esllm.study.krippendorff import krippendorff_alpha_ordinal
from esllm.study.stats import study_table

CATEGORIES = ["comprension_basica", "tareas_complejas", "creativas", "contextual"]
CONTESTANTS = ["llama-2-chat", "mistral-instruct", "falcon-instruct"]
TARGET_S = 2.0


def make_columns(n_items: int, k: int, n_raters: int, seed: int) -> dict[str, object]:
    """The score rows as arrays; the string columns as pd.Categorical built from integer codes, the way a loader
    that reads ids and joins a few names (esllm.study.results) can hand them over."""
    rng = np.random.default_rng(seed)
    n_con = len(CONTESTANTS)
    quality = np.clip(rng.normal([3.6, 4.0, 3.7], 0.8, size=(n_items, n_con)), 1, 5)  # hidden, per contestant
    raters = np.argsort(rng.random((n_items, n_raters)), axis=1)[:, :k]  # k distinct raters per item
    item = np.repeat(np.arange(n_items), k * n_con)
    con = np.tile(np.repeat(np.arange(n_con), k), n_items)
    rater = np.tile(raters, (1, n_con)).reshape(-1)  # the same k raters score all contestants of an item
    value = np.clip(np.rint(quality[item, con] + rng.normal(0, 0.7, size=item.size)), 1, 5).astype(np.int64)
    names = [f"evaluador-{i:03d}" for i in range(n_raters)]
    cat = pd.Categorical.from_codes
    return {"item": item, "category": cat(item % len(CATEGORIES), CATEGORIES), "contestant": cat(con, CONTESTANTS),
            "rater": cat(rater, names), "criterion": cat(np.zeros(item.size, dtype=np.int8), ["general"]),
            "value": value}


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=111_112)
    p.add_argument("--raters-per-item", type=int, default=3)
    p.add_argument("--rater-pool", type=int, default=200)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(f"esllm report benchmark, {datetime.now():%Y-%m-%d %H:%M:%S}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}; "
          f"{os.cpu_count()} CPUs; load avg 1/5/15 min: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"args {vars(a)}")
    cols = make_columns(a.items, a.raters_per_item, a.rater_pool, a.seed)
    rows = len(cols["value"])
    print(f"shape: {a.items} items x {len(CONTESTANTS)} contestants x {a.raters_per_item} raters "
          f"(pool {a.rater_pool}), {len(CATEGORIES)} categories, criterion general = {rows:,} rows")

    build = lambda: pd.DataFrame(cols)  # noqa: E731
    table = lambda: study_table(df, "general", seed=0, n_boot=a.n_boot)  # noqa: E731
    alpha = lambda: krippendorff_alpha_ordinal(df, "general")  # noqa: E731
    df = build()
    table(), alpha()  # warm-up
    t_df, df = best(build, a.repeat)
    t_table, result = best(table, a.repeat)
    t_alpha, agreement = best(alpha, a.repeat)
    total = t_table + t_alpha
    print(f"DataFrame from column arrays: {t_df:.3f} s")
    print(f"study_table (general, n_boot={a.n_boot}, 4 categories x 3 contestants + Promedio): {t_table:.3f} s")
    print(f"krippendorff_alpha_ordinal ({agreement.units:,} units, {agreement.values:,} values): {t_alpha:.3f} s")
    print(f"total table + alpha: {total:.3f} s = {total / TARGET_S:.2f} x the {TARGET_S:.0f} s target "
          f"({'met' if total < TARGET_S else 'MISSED'}); with the DataFrame build: {total + t_df:.3f} s")
    plain = df.astype({c: "str" for c in ("category", "contestant", "rater", "criterion")})
    t = time.perf_counter()
    study_table(plain, "general", seed=0, n_boot=a.n_boot), krippendorff_alpha_ordinal(plain, "general")
    t_plain = time.perf_counter() - t
    print(f"the same with plain str columns instead of categorical (one run): table + alpha {t_plain:.3f} s")
    print(f"alpha = {agreement.alpha:.4f}")
    for con in result.contestants:
        c = result.cell("Promedio", con)
        print(f"  Promedio {con}: {c.mean:.4f} [{c.ci_low:.4f}, {c.ci_high:.4f}] n={c.n:,} n_scores={c.n_scores:,}")
    print(f"load avg after: {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
