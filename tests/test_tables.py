"""The study's tables (issue 14): Tables 4 and 6 reproduced exactly from scores built to have the study's values,
Table 5 from stored Belebele runs, and the Markdown / LaTeX / wide CSV forms parsed back to the same numbers."""

from __future__ import annotations

import csv
import io
import re

import pandas as pd
import pytest

from esllm.study import stats
from esllm.study.tables import (
    BelebeleRun,
    belebele_table,
    category_labels,
    ci_table,
    plain_table,
    to_csv,
    to_latex,
    to_markdown,
)

MODELS = ["LLaMA2-Chat", "Mistral", "FALCON"]
# The study's Table 4 (general set) and Table 6 (law set): category -> one mean per model.
TABLE4 = {"comprension_basica": (3.4, 4.0, 3.2), "tareas_complejas": (4.11, 4.11, 3.25),
          "creativas": (3.2, 4.0, 5.0), "contextual": (3.76, 4.0, 3.36)}
TABLE4_AVERAGE = (3.6175, 4.0275, 3.7025)
TABLE6 = {"basicas": (3.86, 3.35, 3.64), "complejas": (2.23, 2.36, 3.16)}
N_ITEMS = 100  # 100 single-rater items per cell: integer scores 1..5 can have any mean with two decimals


def study_scores(table: dict[str, tuple[float, ...]]) -> pd.DataFrame:
    """A score frame (one rater per item) whose category means are exactly the table's values."""
    rows = []
    for cat, means in table.items():
        for model, mean in zip(MODELS, means):
            q, r = divmod(round(mean * N_ITEMS), N_ITEMS)
            for i in range(N_ITEMS):
                rows.append({"item": f"{cat}-{i}", "category": cat, "contestant": model, "rater": "r1",
                             "criterion": "general", "value": q + (i < r)})
    return pd.DataFrame(rows)


def parse_markdown(md: str) -> dict[tuple[str, str], str]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for line in lines[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        out.update({(cells[0], h): v for h, v in zip(header[1:], cells[1:])})
    return out


def parse_latex(tex: str) -> dict[tuple[str, str], str]:
    rows = [line[:-2].strip() for line in tex.splitlines() if line.endswith(r"\\")]
    header = [c.strip() for c in re.split(r"(?<!\\)&", rows[0])]
    out = {}
    for line in rows[1:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)&", line)]
        out.update({(cells[0], h): v for h, v in zip(header[1:], cells[1:])})
    return out


def parse_csv(text: str) -> dict[tuple[str, str], str]:
    rows = list(csv.reader(io.StringIO(text)))
    return {(r[0], h): v for r in rows[1:] for h, v in zip(rows[0][1:], r[1:])}


@pytest.mark.parametrize("set_name, table, average, rows", [
    ("general", TABLE4, TABLE4_AVERAGE, ["Simples", "Complejas", "Creativas", "Contextuales"]),
    ("tributario-ec", TABLE6, None, ["Simples", "Complejas"]),
])
def test_tables_4_and_6_are_reproduced_exactly(set_name, table, average, rows):
    grid = plain_table(study_scores(table), labels=category_labels(set_name))
    assert grid.rows == rows + ["Promedio"] and grid.columns == MODELS
    for label, means in zip(rows, table.values()):
        for model, mean in zip(MODELS, means):
            assert grid.values[(label, model)] == pytest.approx(mean, abs=1e-12)
            assert grid.text(label, model) == f"{mean:.2f}"
    expected = average or tuple(sum(col) / len(col) for col in zip(*table.values()))  # Table 6: 3.045, 2.855, 3.40
    for model, avg in zip(MODELS, expected):
        assert grid.values[("Promedio", model)] == pytest.approx(avg, abs=1e-12)
    if set_name == "general":
        assert [grid.text("Promedio", m) for m in MODELS] == ["3.62", "4.03", "3.70"]
    assert not grid.ci, "the plain view has no CI"
    # the three text forms parse back to the numbers the table prints
    printed = {(r, c): grid.text(r, c) for r in grid.rows for c in grid.columns}
    assert parse_markdown(to_markdown(grid)) == printed
    assert parse_latex(to_latex(grid)) == printed
    assert parse_csv(to_csv(grid)) == printed
    tex = to_latex(grid)
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1 and tex.count(r"\midrule") == 2


def test_ci_view_beside_it_has_the_same_means():
    df = study_scores(TABLE4)
    plain = plain_table(df, labels=category_labels("general"))
    ci = ci_table(stats.study_table(df, seed=0, n_boot=200), labels=category_labels("general"))
    assert ci.rows == plain.rows and ci.columns == plain.columns
    for key, v in plain.values.items():
        assert ci.values[key] == pytest.approx(v, abs=1e-12)
        lo, hi, n = ci.ci[key]
        assert lo <= v <= hi and n == (N_ITEMS * 4 if key[0] == "Promedio" else N_ITEMS)
    assert re.fullmatch(r"3\.40 \[\d\.\d\d–\d\.\d\d\] n=100", ci.text("Simples", "LLaMA2-Chat"))
    wide = list(csv.reader(io.StringIO(to_csv(ci))))
    assert wide[0][:5] == ["Categoría", "LLaMA2-Chat", "LLaMA2-Chat IC95 inf", "LLaMA2-Chat IC95 sup", "LLaMA2-Chat n"]
    assert wide[1][1] == "3.40" and wide[1][4] == "100"


def test_rows_follow_the_set_order_and_unknown_categories_keep_their_key():
    df = study_scores({"creativas": (3, 3, 3), "nueva": (2, 2, 2)})
    grid = plain_table(df, labels=category_labels("general"), order=["nueva", "creativas"])
    assert grid.rows == ["nueva", "Creativas", "Promedio"]


STUDY_BELEBELE = {"LLaMA2-Chat": (0.547, 0.472), "Mistral": (0.404, 0.334), "FALCON": (0.295, 0.287)}


def belebele_runs(mode="lm-eval"):
    runs = []
    for model, (without, with_) in STUDY_BELEBELE.items():
        runs.append(BelebeleRun(model, f"org/{model}", None, without, 900, mode))
        runs.append(BelebeleRun(f"{model} + lora", f"org/{model}", f"{model}-lora", with_, 900, mode))
    return runs


def test_table_5_from_runs_never_mixes_modes():
    grid = belebele_table(belebele_runs() + [BelebeleRun("x", "org/LLaMA2-Chat", None, 0.9, 40, "chat")],
                          mode="lm-eval")
    assert grid.rows == ["Sin LoRA", "Con LoRA"] and grid.columns == list(STUDY_BELEBELE)
    assert [grid.text("Sin LoRA", m) for m in grid.columns] == ["54.7", "40.4", "29.5"]
    assert [grid.text("Con LoRA", m) for m in grid.columns] == ["47.2", "33.4", "28.7"]
    assert "modo lm-eval" in grid.note and "n = 900" in grid.note
    printed = {(r, c): grid.text(r, c) for r in grid.rows for c in grid.columns}
    assert parse_markdown(to_markdown(grid)) == printed == parse_latex(to_latex(grid))
    assert parse_csv(to_csv(grid)) == {(r, c): v for (r, c), v in printed.items()}
    chat = belebele_table(belebele_runs("chat"), mode="chat")
    assert chat.values == grid.values
    assert belebele_table(belebele_runs("chat"), mode="lm-eval").values == {}


def test_table_5_one_row_per_adapter_when_a_base_has_several():
    runs = [BelebeleRun("gemma-base", "bundled:gemma-3-270m", None, 0.25, 40, "chat"),
            BelebeleRun("gemma-instrucciones", "bundled:gemma-3-270m", "instrucciones-es", 0.3, 40, "chat"),
            BelebeleRun("gemma-3-270m + tributario-ec", "bundled:gemma-3-270m", "tributario-ec", 0.275, 40, "chat")]
    grid = belebele_table(runs, mode="chat")
    assert grid.columns == ["gemma-3-270m"] and grid.rows == ["Sin LoRA", "instrucciones-es", "tributario-ec"]
    assert grid.text("tributario-ec", "gemma-3-270m") == "27.5"


def test_latex_and_markdown_escape_names():
    df = study_scores({"creativas": (3, 4, 5)}).replace({"contestant": {"FALCON": "falcon_7b & 50%"}})
    grid = plain_table(df)
    assert r"falcon\_7b \& 50\%" in to_latex(grid)
    assert parse_latex(to_latex(grid))[("creativas", r"falcon\_7b \& 50\%")] == "5.00"


def store_belebele_runs(Session, runs, *, file_sha="f" * 64):
    from esllm.evals.runs import finish_run, start_run

    with Session() as s:
        for r in runs:
            run = start_run(s, "belebele", r.contestant, config={"mode": r.mode, "file": "spa_Latn.jsonl",
                                                                 "file_sha256": file_sha, "n_items": r.n},
                            hashes={"base": r.base, "adapter": r.adapter})
            finish_run(s, run, metrics={"accuracy": r.accuracy, "n": r.n})
        s.commit()


def test_table_5_from_stored_runs_and_the_cli(store, cli, tmp_path):
    from esllm.evals.belebele_table import belebele_grid
    from esllm.evals.runs import finish_run, start_run

    store_belebele_runs(store.Session, belebele_runs("chat"))
    store_belebele_runs(store.Session, belebele_runs("lm-eval"))
    with store.Session() as s:  # a run from before modes existed counts as chat, never in the lm-eval table
        run = start_run(s, "belebele", "LLaMA2-Chat", config={"file_sha256": "f" * 64}, hashes={"base": "org/LLaMA2-Chat"})
        finish_run(s, run, metrics={"accuracy": 0.99, "n": 900})
        s.commit()
        grid = belebele_grid(s, "lm-eval")
        assert [grid.text("Sin LoRA", m) for m in grid.columns] == ["54.7", "40.4", "29.5"]
        assert [grid.text("Con LoRA", m) for m in grid.columns] == ["47.2", "33.4", "28.7"]
        assert belebele_grid(s, "chat").text("Sin LoRA", "LLaMA2-Chat") == "99.0"
    r = cli("export", "--belebele", "lm-eval", "--out", tmp_path / "t5", db_url=store.url)
    assert r.returncode == 0, r
    assert parse_markdown((tmp_path / "t5" / "tabla_belebele.md").read_text(encoding="utf-8")) == {
        (row, m): grid.text(row, m) for row in grid.rows for m in grid.columns}
    assert parse_csv((tmp_path / "t5" / "tabla_belebele.csv").read_text(encoding="utf-8-sig"))[("Con LoRA", "FALCON")] == "28.7"
    assert r"\toprule" in (tmp_path / "t5" / "tabla_belebele.tex").read_text(encoding="utf-8")
    r = cli("export", "--out", tmp_path / "x", db_url=store.url)
    assert r.returncode == 2 and "Indique una sesión" in r.stderr + r.stdout
