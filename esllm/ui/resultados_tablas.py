"""«Resultados» › «Tablas del estudio» (admins only): the thesis's tables from stored data, ready to paste.

- the human table (Tables 4 and 6: category labels of the set, plain means, two decimals, Promedio) beside the
  same with 95% CIs and n; for a session graded by a judge model, the judge's table in the same layout and the
  agreement figures (esllm/evals/agreement.py);
- Table 5 from the stored Belebele runs of one mode (lm-eval or chat, never mixed);
- each as wide CSV, Markdown and LaTeX (booktabs) files, named for `ExportGuard` (admins only).

The tables come from esllm/study/tables.py, the data from esllm/study/results.py and esllm/evals/belebele_table.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from sqlalchemy import select

from esllm import EsllmError
from esllm.evals.agreement import judge_agreement
from esllm.evals.belebele_table import MODE_LABELS, MODES, belebele_grid
from esllm.store.models import PromptSet
from esllm.study import stats, tables
from esllm.study.export import plain_grid, set_labels_and_order, study_grids
from esllm.study.results import find_session, prompt_set_scores_frame, session_scores_frame
from esllm.ui.context import AppContext, bind, handler
from esllm.ui.downloads import EXPORT_PREFIX, new_export_dir

AGREEMENT_HEADERS = ["juez", "ítems comparados", "exacto %", "±1 %", "Spearman", "alfa de Krippendorff"]


def _files(grids: dict[str, tables.Grid]) -> list[str]:
    out = new_export_dir()
    named: list[str] = []
    for stem, grid in grids.items():
        for name, path in tables.write_table(grid, out, stem).items():
            target = Path(path).with_name(f"{EXPORT_PREFIX}{name}")
            Path(path).rename(target)
            named.append(str(target))
    return named


def study_tables(s, scope: str, which: str) -> dict[str, Any]:
    """{grids: {stem: Grid}, judge: Grid | None, agreement: rows} for a session ("Sesión") or a prompt set."""
    if scope == "Sesión":
        rs = find_session(s, which)
        df = session_scores_frame(s, rs.id)
        if df.empty:
            raise EsllmError(f"La sesión {rs.name!r} aún no tiene puntuaciones.")
        grids = study_grids(s, rs, df)
        judges = session_scores_frame(s, rs.id, who="judges")
        agreement, judge_grids = [], []
        if not judges.empty:
            for name, part in judges.groupby("rater", observed=True):
                grid = plain_grid(s, rs, part, title=f"{rs.name} · {name}")
                judge_grids.append(grid)
                grids[f"tabla_{name}"] = grid
                a = judge_agreement(df, part).as_dict()
                agreement.append([name, a.get("n"), _pct(a.get("exact")), _pct(a.get("within_one")),
                                  _num(a.get("spearman")), _num(a.get("alpha"))])
        return {"grids": grids, "judges": judge_grids, "agreement": agreement}
    ps = s.scalars(select(PromptSet).where(PromptSet.name == which)).first()
    if ps is None:
        raise EsllmError(f"No existe el conjunto de prompts {which!r}.")
    df = prompt_set_scores_frame(s, which)
    if df.empty:
        raise EsllmError(f"El conjunto {which!r} aún no tiene puntuaciones.")
    labels, order = set_labels_and_order(s, ps.id)
    grids = {"tabla_conjunto": tables.plain_table(df, labels=labels, order=order, title=which),
             "tabla_conjunto_ic": tables.ci_table(stats.study_table(df, seed=0), labels=labels, order=order,
                                                  title=which)}
    return {"grids": grids, "judges": [], "agreement": []}


def _pct(x: Any) -> str:  # agreement figures are already percentages
    return "—" if x is None else f"{float(x):.1f}"


def _num(x: Any) -> str:
    try:
        return "—" if x is None or x != x else f"{float(x):.3f}"
    except (TypeError, ValueError):
        return "—"


@handler("admin")
def tables_handler(ctx: AppContext, scope_value: Any, which_value: Any, request: gr.Request):
    """«Tablas del estudio» (/resultados_tablas): (plain table, CI table, judge table, agreement, markdown, files)."""
    if not isinstance(which_value, str) or not which_value.strip():
        raise EsllmError("Elija una sesión o un conjunto.")
    with ctx.sessionmaker() as s:
        r = study_tables(s, scope_value, which_value.strip())
    grids = r["grids"]
    plain, ci = list(grids.values())[:2]
    md = "#### Tabla (como en la tesis)\n\n" + tables.to_markdown(plain)
    for judge in r["judges"]:
        md += f"\n#### {judge.title}\n\n" + tables.to_markdown(judge)
    judges = pd.concat([j.frame().assign(juez=j.title.split(" · ")[-1]) for j in r["judges"]], ignore_index=True) \
        if r["judges"] else pd.DataFrame()
    return plain.frame(), ci.frame(), judges, r["agreement"], md, _files(grids)


@handler("admin")
def belebele_handler(ctx: AppContext, mode: Any, request: gr.Request):
    """«Tabla de Belebele» (/resultados_tabla_belebele): (Table 5, markdown, files) from the stored runs of a mode."""
    if mode not in MODES:
        raise EsllmError(f"Elija un modo: {', '.join(MODES)}.")
    with ctx.sessionmaker() as s:
        grid = belebele_grid(s, mode)
    return grid.frame(), tables.to_markdown(grid), _files({f"tabla_belebele_{mode}": grid})


def build_tablas(ctx: AppContext, scope, which) -> None:
    """Lay out the accordion under the study table; `scope` and `which` are the tab's own selectors."""
    with gr.Accordion("Tablas del estudio (para la tesis: CSV ancho, Markdown, LaTeX)", open=False):
        gr.Markdown("Como las Tablas 4 y 6 de la tesis: medias simples con dos decimales y «Promedio» = media de las "
                    "medias por categoría; al lado, la misma tabla con IC 95 % y n. Si un juez calificó la sesión, su "
                    "tabla con el mismo formato y el acuerdo con los humanos.")
        go = gr.Button("Tablas del estudio", elem_id="resultados-tablas")
        with gr.Row():
            plain = gr.Dataframe(value=None, interactive=False, label="Medias (como en la tesis)")
            ci = gr.Dataframe(value=None, interactive=False, wrap=True, label="Con IC 95 % y n")
        with gr.Row():
            judge = gr.Dataframe(value=None, interactive=False, label="Juez (mismo formato)")
            agreement = gr.Dataframe(headers=AGREEMENT_HEADERS, value=None, interactive=False,
                                     label="Juez frente a humanos")
        md = gr.Markdown("")
        files = gr.File(label="Archivos", file_count="multiple", interactive=False, elem_id="resultados-tablas-archivos")
        gr.Markdown("**Tabla 5 (Belebele)**: filas «Sin LoRA» / «Con LoRA» (o una por adaptador), columnas = modelos "
                    "base, exactitud %. Nunca mezcla modos.")
        with gr.Row():
            mode = gr.Radio([(MODE_LABELS[m], m) for m in MODES], value="lm-eval", label="Modo")
            b_go = gr.Button("Tabla de Belebele")
        b_table = gr.Dataframe(value=None, interactive=False, label="Belebele")
        b_md = gr.Markdown("")
        b_files = gr.File(label="Archivos", file_count="multiple", interactive=False)
    go.click(bind(ctx, tables_handler), [scope, which], [plain, ci, judge, agreement, md, files],
             api_name="resultados_tablas")
    b_go.click(bind(ctx, belebele_handler), mode, [b_table, b_md, b_files], api_name="resultados_tabla_belebele")
