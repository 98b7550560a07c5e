"""Tab «Resultados» (admins only): the study's table for a rating session or a whole prompt set, the
same per aspect in "full" mode, Krippendorff's alpha, a bar chart with CIs, each rater's progress,
Bradley–Terry ratings from «Comparar» votes, the downloads, the study's tables as the thesis prints them
(esllm/ui/resultados_tablas.py), and the automatic evaluations (Belebele,
judge model, reading-comprehension questions, pictograms: esllm/ui/resultados_belebele.py,
resultados_juez.py and resultados_tareas.py).

Every handler is declared `@handler("admin")`: a rater or an anonymous caller gets an error and no data.
Nothing in the page's initial config names a session, contestant or rater (the dropdown is filled on load
for admins). Export files are named with `EXPORT_PREFIX`, so `ExportGuard` (esllm/ui/downloads.py) refuses
them to anyone but an admin even with the link. The numbers come from esllm/study/stats.py, krippendorff.py
and bradley_terry.py, the data from esllm/study/results.py, the files from esllm/study/export.py. Handlers are
module-level; `build_resultados` only lays out and wires.
"""

from __future__ import annotations

import math
import re
from typing import Any

import gradio as gr
from sqlalchemy import select

from esllm import EsllmError
from esllm.store.models import ASPECTS, CRITERION_LABELS, PromptSet, RatingSession
from esllm.study import charts, stats
from esllm.study.admin import STATUS_ES, set_names
from esllm.study.bradley_terry import bradley_terry as bt_ratings  # the handler below is named bradley_terry
from esllm.study.export import set_labels_and_order, write_exports
from esllm.study.krippendorff import krippendorff_alpha_ordinal
from esllm.study.results import (
    comparar_votes,
    find_session,
    progress_by_rater,
    prompt_set_scores_frame,
    session_scores_frame,
)
from esllm.ui.context import AppContext, bind, handler
from esllm.ui.downloads import EXPORT_PREFIX, new_export_dir
from esllm.ui.resultados_belebele import build_belebele
from esllm.ui.resultados_juez import build_juez
from esllm.ui.resultados_tablas import build_tablas
from esllm.ui.resultados_tareas import build_tareas

SCOPES = ["Sesión", "Conjunto de prompts"]
PROGRESS_HEADERS = ["sesión", "evaluador (seudónimo)", "usuario", "ítems hechos", "ítems asignados"]
ALPHA_HEADERS = ["criterio", "alfa de Krippendorff (ordinal)", "unidades con ≥ 2 evaluadores", "puntuaciones"]
BT_HEADERS = ["concursante", "puntuación (tipo Elo)", "IC 95 % inf.", "IC 95 % sup.", "votos"]


def _session_choices(s) -> list[tuple[str, str]]:
    rows = s.scalars(select(RatingSession).order_by(RatingSession.id))
    return [(f"{r.name} ({STATUS_ES.get(r.status, r.status)})", r.name) for r in rows]


def _fmt(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:60] or "sesion"


def compute(s, scope: str, which: str, *, seed: int = 0) -> dict[str, Any]:
    """Everything the tab shows for a session (scope "Sesión") or a prompt set, as plain data."""
    if scope == SCOPES[0]:
        rs = find_session(s, which)
        df = session_scores_frame(s, rs.id)
        sessions = [rs]
        set_id = rs.prompt_set_id
        title = f"Sesión «{rs.name}» · {STATUS_ES.get(rs.status, rs.status)} · modo {rs.rubric_mode} · k={rs.overlap_k}"
    elif scope == SCOPES[1]:
        if which not in set_names(s):
            raise EsllmError(f"No existe el conjunto de prompts {which!r}.")
        df = prompt_set_scores_frame(s, which)
        ps = s.scalars(select(PromptSet).where(PromptSet.name == which)).one()
        sessions = list(s.scalars(select(RatingSession).where(RatingSession.prompt_set_id == ps.id)
                                  .order_by(RatingSession.id)))
        title = f"Conjunto «{which}» · {len(sessions)} sesión(es)"
        set_id = ps.id
    else:
        raise EsllmError("Elija «Sesión» o «Conjunto de prompts».")
    progress = [[rs.name, *row] for rs in sessions for row in progress_by_rater(s, rs.id)]
    labels, order = set_labels_and_order(s, set_id)
    out: dict[str, Any] = {"title": title, "progress": progress, "n_scores": int(len(df)), "tables": {}, "alpha": [],
                           "labels": labels, "order": order}
    if df.empty:
        return out
    criteria = ["general"] + [a for a in ASPECTS if (df["criterion"] == a).any()]
    for crit in criteria:
        out["tables"][crit] = stats.study_table(df, crit, seed=seed)
        a = krippendorff_alpha_ordinal(df, crit)
        out["alpha"].append([CRITERION_LABELS.get(crit, crit), _fmt(a.alpha), a.units, a.values])
    out["raters"] = int(df["rater"].nunique())
    out["items"] = int(df["item"].nunique())
    return out


def _choices_for(ctx: AppContext, scope_value: str):
    with ctx.sessionmaker() as s:
        if scope_value == SCOPES[1]:
            opts = [(n, n) for n in set_names(s)]
        else:
            opts = _session_choices(s)
    return gr.update(choices=opts, value=opts[-1][1] if opts else None)


def refresh_choices(ctx: AppContext, scope_value: Any, current: Any, request: gr.Request):
    """The tab was opened: the sessions or sets again (one created meanwhile appears), the chosen one kept."""
    if not ctx.is_admin(request):
        return gr.update()
    update = _choices_for(ctx, scope_value)
    if current in [v for _, v in update["choices"]]:
        update["value"] = current
    return update


def scope_choices(ctx: AppContext, scope_value: Any, request: gr.Request):
    """The scope radio changed: the sessions or the prompt sets, for admins (others: no change, no error)."""
    if not ctx.is_admin(request):
        return gr.update()
    return _choices_for(ctx, scope_value)


@handler("admin")
def compute_handler(ctx: AppContext, scope_value: Any, which_value: Any, request: gr.Request):
    """«Calcular» (/resultados_calcular): (summary, study table, chart, per-aspect table, alpha, progress)."""
    if not isinstance(which_value, str) or not which_value.strip():
        raise EsllmError("Elija una sesión o un conjunto.")
    with ctx.sessionmaker() as s:
        r = compute(s, scope_value, which_value.strip())
    if not r["tables"]:
        md = f"### {r['title']}\n\nAún no hay puntuaciones."
        return md, None, None, gr.update(value=None, visible=False), None, r["progress"]
    general = r["tables"]["general"]
    md = (f"### {r['title']}\n\n{r['n_scores']} puntuaciones · {r['items']} ítems · {r['raters']} "
          "evaluador(es). Cada celda: media de los ítems (un ítem = media de sus evaluadores), IC 95 % "
          "bootstrap sobre ítems, n = ítems. «Promedio» = media no ponderada de las medias por categoría.")
    shown = {"labels": r["labels"], "order": r["order"]}
    fig = charts.study_bars(general, title=r["title"].split(" · ")[0], **shown)
    if len(r["tables"]) > 1:
        frames = []
        for crit, t in r["tables"].items():
            if crit == "general":
                continue
            f = stats.display_frame(t, **shown)
            f.insert(0, "Aspecto", CRITERION_LABELS.get(crit, crit))
            frames.append(f)
        import pandas as pd

        asp = gr.update(value=pd.concat(frames, ignore_index=True), visible=True)
    else:
        asp = gr.update(value=None, visible=False)
    return md, stats.display_frame(general, **shown), fig, asp, r["alpha"], r["progress"]


@handler("admin")
def download(ctx: AppContext, scope_value: Any, which_value: Any, request: gr.Request) -> list[str]:
    """«Preparar descargas» (/resultados_descargar): one session's export files, named for `ExportGuard`."""
    if scope_value != SCOPES[0] or not isinstance(which_value, str) or not which_value.strip():
        raise EsllmError("Las descargas son por sesión: elija «Sesión» y una sesión.")
    out = new_export_dir()
    with ctx.sessionmaker() as s:
        rs = find_session(s, which_value.strip())
        paths = write_exports(s, rs.id, out)
        slug = _slug(rs.name)
    named = []
    for name, p in paths.items():
        target = p.with_name(f"{EXPORT_PREFIX}{slug}-{name}")
        p.rename(target)
        named.append(str(target))
    return named


@handler("admin")
def bradley_terry(ctx: AppContext, request: gr.Request):
    """«Calcular con los votos» (/resultados_bradley_terry): (ratings table, chart) from «Comparar» votes."""
    with ctx.sessionmaker() as s:
        votes = comparar_votes(s)
    if not votes:
        raise EsllmError("Aún no hay votos de «Comparar».")
    res = bt_ratings(votes, seed=0)
    rows = [[r.contestant, round(r.rating, 1), round(r.ci_low, 1), round(r.ci_high, 1), r.n_votes]
            for r in res.ratings]
    return rows, charts.bt_bars(res)


def load_resultados(ctx: AppContext, sections: list, request: gr.Request) -> tuple:
    """Page load (never raises): the session dropdown and notice, then each automatic section's load outputs
    (`sections`: the (load function, outputs) pairs of the section builders)."""
    if ctx.is_admin(request):
        out = [_choices_for(ctx, SCOPES[0]), ""]
    else:
        out = [gr.update(choices=[], value=None), "«Resultados» es solo para administradores."]
    for fn, outs in sections:
        got = fn(request)
        out += list(got) if len(outs) > 1 else [got]
    return tuple(out)


def build_resultados(ctx: AppContext):
    """Build the tab; returns (load function, outputs), the automatic sections' included."""
    with gr.Tab("Resultados", id="resultados") as tab:
        notice = gr.Markdown("", elem_id="resultados-aviso")
        with gr.Row():
            scope = gr.Radio(SCOPES, value=SCOPES[0], label="Ver resultados de", scale=1)
            which = gr.Dropdown([], value=None, label="Sesión o conjunto", allow_custom_value=True, scale=2,
                                elem_id="resultados-cual")
            go = gr.Button("Calcular", variant="primary", elem_id="resultados-calcular", scale=1)
        summary = gr.Markdown("", elem_id="resultados-resumen")
        table = gr.Dataframe(value=None, interactive=False, wrap=True, elem_id="resultados-tabla",
                             label="Tabla del estudio (general): media [IC 95 % bootstrap] n = ítems")
        chart = gr.Plot(label="Medias por categoría con IC 95 %", elem_id="resultados-grafico")
        aspects = gr.Dataframe(value=None, interactive=False, wrap=True, visible=False,
                               label="Por aspecto (sesiones en modo completo)")
        alpha = gr.Dataframe(headers=ALPHA_HEADERS, value=None, interactive=False,
                             label="Acuerdo entre evaluadores")
        progress = gr.Dataframe(headers=PROGRESS_HEADERS, value=None, interactive=False,
                                label="Progreso por evaluador")
        build_tablas(ctx, scope, which)  # Tables 4/5/6 as the thesis prints them, judge vs humans, CSV/MD/LaTeX
        with gr.Accordion("Descargas (CSV, DPO, KTO)", open=True):
            gr.Markdown("Puntuaciones en formato largo, la tabla agregada, el acuerdo, las respuestas con sus "
                        "parámetros, pares DPO y KTO (pulgares de «Conversar»). Solo de una sesión.")
            dl_go = gr.Button("Preparar descargas", elem_id="resultados-descargar")
            files = gr.File(label="Archivos", file_count="multiple", interactive=False, elem_id="resultados-archivos")
        with gr.Accordion("Comparar: Bradley–Terry", open=False):
            bt_go = gr.Button("Calcular con los votos", elem_id="resultados-bt")
            bt_table = gr.Dataframe(headers=BT_HEADERS, value=None, interactive=False, label="Puntuaciones")
            bt_chart = gr.Plot(label="Bradley–Terry con IC 95 %")

        scope.change(bind(ctx, scope_choices), scope, which, api_name=False)
        tab.select(bind(ctx, refresh_choices), [scope, which], which, api_name=False)  # fresh when opened
        go.click(bind(ctx, compute_handler), [scope, which], [summary, table, chart, aspects, alpha, progress],
                 api_name="resultados_calcular")
        dl_go.click(bind(ctx, download), [scope, which], files, api_name="resultados_descargar")
        bt_go.click(bind(ctx, bradley_terry), None, [bt_table, bt_chart], api_name="resultados_bradley_terry")
        # Automatic evaluations (esllm/evals/): each section declares the admin role on its own handlers.
        gr.Markdown("### Evaluaciones automáticas")
        sections = [build(ctx) for build in (build_belebele, build_juez, build_tareas)]

    return bind(ctx, load_resultados, sections), [which, notice] + [o for _, outs in sections for o in outs]
