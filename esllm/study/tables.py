"""The study's tables as the thesis prints them, from stored data, and their text forms (wide CSV, Markdown,
LaTeX with booktabs).

    grid = plain_table(df, labels=category_labels("general"))   # Table 4 / 6: means, two decimals, Promedio
    grid = ci_table(stats.study_table(df), labels=...)          # today's view: mean [95% CI] n
    grid = belebele_table(runs, mode="lm-eval")                  # Table 5: Sin LoRA / Con LoRA × base models
    to_markdown(grid), to_latex(grid), to_csv(grid)

A `Grid` is rows × columns of numbers (optionally with a CI and n per cell), the row labels as people read
them. The plain view is exactly the study's: each cell the mean of the item scores (an item = the mean of
its raters), no CI, two decimals, and a «Promedio» row = the unweighted mean of the category means (its
value is kept exact, e.g. 3.6175, and printed 3.62). Category labels come from
data/prompts/categorias.yaml (per prompt set; the bundled sets use the study's Spanish names), else the
prompt module's defaults, else the category key; rows keep the order in which the set lists its
categories. Pure functions over plain data, no database or Gradio.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import pandas as pd
import yaml

from esllm.paths import PROMPTS_DIR
from esllm.study import stats
from esllm.study.files import CSV_ENCODING, escape_cell, write_text
from esllm.study.prompts import CATEGORY_LABELS

LABELS_FILE = PROMPTS_DIR / "categorias.yaml"
PROMEDIO = stats.PROMEDIO
NO_LORA, WITH_LORA = "Sin LoRA", "Con LoRA"


@dataclass
class Grid:
    """Rows × columns of numbers. `ci[(row, col)] = (low, high, n)` when the view shows them; `percent`: values
    are shares shown as % (Belebele); `total_row`: the row label printed after a rule (Promedio)."""

    title: str
    corner: str
    rows: list[str]
    columns: list[str]
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    ci: dict[tuple[str, str], tuple[float, float, int]] = field(default_factory=dict)
    decimals: int = 2
    percent: bool = False
    total_row: Optional[str] = None
    note: str = ""

    def value(self, row: str, col: str) -> Optional[float]:
        v = self.values.get((row, col))
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    def text(self, row: str, col: str, *, with_ci: bool = True) -> str:
        """The cell as printed: "3.40", "54.7", "3.62 [3.40–3.85] n=10", or "—" where there is no value."""
        v = self.value(row, col)
        if v is None:
            return "—"
        scale = 100.0 if self.percent else 1.0
        out = f"{v * scale:.{self.decimals}f}"
        if with_ci and (row, col) in self.ci:
            lo, hi, n = self.ci[(row, col)]
            out += f" [{lo * scale:.{self.decimals}f}–{hi * scale:.{self.decimals}f}] n={n}"
        return out

    def frame(self) -> pd.DataFrame:
        """For a screen (gr.Dataframe): the corner column then one text column per column."""
        return pd.DataFrame([[r, *(self.text(r, c) for c in self.columns)] for r in self.rows],
                            columns=[self.corner, *self.columns])


# ---------------------------------------------------------------- category labels

def category_labels(set_name: Optional[str], path: Path = LABELS_FILE) -> dict[str, str]:
    """category key -> label as people read it, for one prompt set (see the module docstring)."""
    labels = dict(CATEGORY_LABELS)
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        labels.update({str(k): str(v) for k, v in (data.get(set_name) or {}).items()} if set_name else {})
    return labels


# ---------------------------------------------------------------- Tables 4 and 6

def plain_table(df: pd.DataFrame, criterion: str = "general", *, labels: Mapping[str, str] = {},
                order: Optional[Sequence[str]] = None, title: str = "", average: bool = True) -> Grid:
    """The study's Table 4/6: rows = categories (set order) + Promedio, columns = contestants (df order), cells =
    the mean of the item scores (no CI), two decimals. `df` has the columns of stats.SCORE_COLUMNS."""
    items = stats.item_scores(df, criterion)
    cats = stats.ordered_categories([str(c) for c in pd.unique(items["category"])], order or ())
    cons = [str(c) for c in pd.unique(items["contestant"])]
    means = items.groupby(["category", "contestant"], observed=True, sort=False)["score"].mean()
    grid = Grid(title, "Categoría", [labels.get(c, c) for c in cats], cons, total_row=PROMEDIO if average else None)
    for (cat, con), m in means.items():
        grid.values[(labels.get(str(cat), str(cat)), str(con))] = float(m)
    if average:
        grid.rows.append(PROMEDIO)
        for con in cons:
            grid.values[(PROMEDIO, con)] = stats.promedio([grid.values[(r, con)] for r in grid.rows[:-1]
                                                           if (r, con) in grid.values])
    return grid


def ci_table(table: stats.StudyTable, *, labels: Mapping[str, str] = {}, order: Optional[Sequence[str]] = None,
             title: str = "") -> Grid:
    """Today's view of the same table: each cell mean [95% bootstrap CI] n = items; Promedio last."""
    cats = stats.ordered_categories(table.categories, order or ())
    grid = Grid(title, "Categoría", [labels.get(c, c) for c in cats] + [PROMEDIO], list(table.contestants),
                total_row=PROMEDIO)
    for cat in cats + [PROMEDIO]:
        for con in table.contestants:
            c = table.cell(cat, con)
            if c is not None:
                row = labels.get(cat, cat) if cat != PROMEDIO else PROMEDIO
                grid.values[(row, con)] = c.mean
                grid.ci[(row, con)] = (c.ci_low, c.ci_high, c.n)
    return grid


# ---------------------------------------------------------------- Table 5

def base_label(source: str) -> str:
    """A base model as a column header: "bundled:gemma-3-270m" -> "gemma-3-270m", "org/Name" -> "Name"."""
    return source.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1] or source


@dataclass(frozen=True)
class BelebeleRun:
    """What Table 5 needs of one stored run (esllm/evals/belebele.py; plain data, for tests too)."""

    contestant: str
    base: str
    adapter: Optional[str]
    accuracy: float
    n: int
    mode: str
    file: str = ""


def belebele_table(runs: Iterable[BelebeleRun], *, mode: str, title: str = "") -> Grid:
    """Table 5: columns = base models, rows "Sin LoRA" / "Con LoRA" (or, when a base has several adapters, one
    row per adapter), cells = accuracy % with one decimal. Only runs of `mode`: modes are never mixed."""
    chosen = [r for r in runs if r.mode == mode]
    columns = list(dict.fromkeys(base_label(r.base) for r in chosen))
    per_base: dict[str, int] = {}
    for r in chosen:
        if r.adapter:
            per_base[base_label(r.base)] = per_base.get(base_label(r.base), 0) + 1
    one_each = all(n <= 1 for n in per_base.values())

    def row_of(r: BelebeleRun) -> str:
        if not r.adapter:
            return NO_LORA
        if one_each:
            return WITH_LORA
        return r.contestant.split(" + ", 1)[1] if " + " in r.contestant else r.adapter

    rows = list(dict.fromkeys([NO_LORA] * any(not r.adapter for r in chosen) + [row_of(r) for r in chosen]))
    ns = sorted({r.n for r in chosen})
    files = sorted({r.file for r in chosen if r.file})
    note = (f"Belebele, modo {mode}; exactitud (%); n = {', '.join(map(str, ns))} preguntas"
            + (f"; archivo {', '.join(files)}" if files else ""))
    grid = Grid(title or f"Belebele ({mode})", "", rows, columns, decimals=1, percent=True, note=note)
    for r in chosen:
        grid.values[(row_of(r), base_label(r.base))] = float(r.accuracy)
    return grid


# ---------------------------------------------------------------- text forms

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(grid: Grid, *, with_ci: bool = True) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned); the note, if any, below it."""
    lines = ["| " + " | ".join(_md_escape(h) for h in [grid.corner, *grid.columns]) + " |",
             "|" + "---|" + "---:|" * len(grid.columns)]
    for r in grid.rows:
        label = f"**{_md_escape(r)}**" if r == grid.total_row else _md_escape(r)
        lines.append("| " + " | ".join([label, *(grid.text(r, c, with_ci=with_ci) for c in grid.columns)]) + " |")
    return "\n".join(lines) + (f"\n\n{grid.note}\n" if grid.note else "\n")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in s)


def to_latex(grid: Grid, *, with_ci: bool = True) -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule; needs \\usepackage{booktabs}), a rule above the
    total row; en dashes and % escaped."""
    def cell(r: str, c: str) -> str:
        return latex_escape(grid.text(r, c, with_ci=with_ci)).replace("–", "--").replace("—", "---")

    out = [r"\begin{tabular}{l" + "r" * len(grid.columns) + "}", r"\toprule",
           " & ".join(latex_escape(h) for h in [grid.corner, *grid.columns]) + r" \\", r"\midrule"]
    for r in grid.rows:
        if r == grid.total_row:
            out.append(r"\midrule")
        out.append(" & ".join([latex_escape(r), *(cell(r, c) for c in grid.columns)]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if grid.note:
        out.insert(0, f"% {grid.note}")
    return "\n".join(out) + "\n"


def to_csv(grid: Grid) -> str:
    """Wide CSV: one row per table row, one column per table column (the number as printed; with a CI, three
    more columns per contestant: «… IC95 inf», «… IC95 sup», «… n»). Cells that a spreadsheet would read as
    a formula get a leading ' (as every export)."""
    header = [grid.corner or "fila"]
    for c in grid.columns:
        header.append(c)
        if grid.ci:
            header += [f"{c} IC95 inf", f"{c} IC95 sup", f"{c} n"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([escape_cell(h) for h in header])
    scale = 100.0 if grid.percent else 1.0
    for r in grid.rows:
        row: list[Any] = [escape_cell(r)]
        for c in grid.columns:
            v = grid.value(r, c)
            row.append("" if v is None else f"{v * scale:.{grid.decimals}f}")
            if grid.ci:
                lo, hi, n = grid.ci.get((r, c), (math.nan, math.nan, ""))
                row += ["" if v is None else f"{lo * scale:.{grid.decimals}f}",
                        "" if v is None else f"{hi * scale:.{grid.decimals}f}", n]
        w.writerow(row)
    return buf.getvalue()


def write_table(grid: Grid, out_dir: Path, stem: str) -> dict[str, Path]:
    """`stem`.csv (utf-8-sig), `stem`.md and `stem`.tex in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    return {f"{stem}.csv": write_text(out_dir / f"{stem}.csv", to_csv(grid), CSV_ENCODING),
            f"{stem}.md": write_text(out_dir / f"{stem}.md", to_markdown(grid)),
            f"{stem}.tex": write_text(out_dir / f"{stem}.tex", to_latex(grid))}
