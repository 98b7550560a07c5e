"""«Juez automático» accordion (admins only; placed in «Resultados»): a contestant grades a rating
session's answers with the rubric, and a table shows each latest judge run's agreement with the humans.

Every handler is declared `@handler("admin")`; the dropdowns are filled on load for admins only (nothing in
the page's initial config names a session or a contestant) and accept any value, which the handler checks:
the judge must be an available contestant, the session an existing one. The work is esllm/evals/judge.py;
the agreement definitions are in esllm/evals/agreement.py. Handlers are module-level; `build_juez` only
lays out and wires.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr
from sqlalchemy import select

from esllm import EsllmError
from esllm.evals.base import run_contestants
from esllm.evals.judge import CRITERION_CHOICES, Judge, latest_judge_runs
from esllm.evals.judge_prompt import JUDGE_PROMPTS
from esllm.store.models import CRITERION_LABELS, RatingSession
from esllm.ui.context import AppContext, bind, handler

HEADERS = ["sesión", "juez", "criterio", "calificadas", "ilegibles", "exacto %", "±1 %", "Spearman", "alfa",
           "n"]
NOTE = ("Una unidad = ítem × concursante × criterio con nota del juez y de al menos un humano (n). Exacto y ±1: "
        "la nota del juez frente a cada nota humana de la unidad (pares). Spearman: nota del juez frente a la "
        "media humana por unidad. Alfa: Krippendorff ordinal con el juez como un evaluador más. Las notas del "
        "juez nunca entran en la tabla del estudio ni en las descargas.")


def _num(x: Any, fmt: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def runs_table(s) -> list[list[Any]]:
    """One row per latest judge run (per session, judge and criterion), as HEADERS."""
    rows = []
    for r in latest_judge_runs(s):
        m, c = r.metrics, r.config
        crit = c.get("criterion")
        rows.append([c.get("session"), r.contestant, CRITERION_LABELS.get(crit, crit), m.get("judge_scores", m.get("graded")),
                     m.get("unparsable"), _num(m.get("exact"), ".1f"), _num(m.get("within_one"), ".1f"),
                     _num(m.get("spearman"), ".3f"), _num(m.get("alpha"), ".3f"), m.get("n")])
    return sorted(rows, key=lambda row: (str(row[0]), str(row[1]), str(row[2])))


def _session_names(s) -> list[str]:
    return list(s.scalars(select(RatingSession.name).order_by(RatingSession.id)))


@handler("admin")
def grade_handler(ctx: AppContext, session: Any, judge: Any, criterion: Any, request: gr.Request,
                  progress=gr.Progress(), prompt: Any = "esllm"):
    """«Calificar con el juez» (/juez_calificar): (summary markdown, table rows). `prompt` (the last input, after
    Gradio's injected request and progress): "esllm" or "estudio" (judge_prompt.JUDGE_PROMPTS)."""
    if not isinstance(session, str) or not session.strip():
        raise EsllmError("Elija una sesión de calificación.")
    if not isinstance(judge, str) or judge not in ctx.engine.available():
        raise EsllmError("Elija como juez un concursante disponible.")
    criterion = criterion or "general"
    if criterion not in CRITERION_CHOICES:
        raise EsllmError(f"Criterio desconocido; use uno de {', '.join(CRITERION_CHOICES)}.")

    def report(done: int, total: int, msg: str) -> None:
        if progress is not None:
            progress((done, total), desc=msg, unit="respuestas")

    evaluation = Judge(session.strip(), criterion=criterion, prompt=prompt or "esllm")
    [run] = run_contestants(evaluation, ctx.sessionmaker, ctx.engine, [judge], progress=report)  # as the CLI
    if run.status != "done":
        raise EsllmError(f"El juez falló: {run.error}")
    m = run.metrics
    md = (f"**Juez {judge} · sesión {session.strip()} · {criterion}:** {m['graded']} calificadas ahora, "
          f"{m['unparsable']} sin número legible (reintentos agotados; no se guardan), {m['errors']} errores, "
          f"{m['skipped']} ya calificadas antes. Acuerdo sobre {m['n']} unidades ({m['pairs']} pares): exacto "
          f"{_num(m['exact'], '.1f')} %, ±1 {_num(m['within_one'], '.1f')} %, Spearman {_num(m['spearman'], '.3f')}, "
          f"alfa {_num(m['alpha'], '.3f')} (solo humanos {_num(m['alpha_humans'], '.3f')}).\n\n{NOTE}")
    with ctx.sessionmaker() as s:
        return md, runs_table(s)


@handler("admin")
def table_handler(ctx: AppContext, request: gr.Request) -> list[list[Any]]:
    """«Actualizar tabla» (/juez_tabla): the latest judge runs."""
    with ctx.sessionmaker() as s:
        return runs_table(s)


def load_juez(ctx: AppContext, request: gr.Request):
    """Page load (never raises): for admins the sessions, the judges and the table; else empty lists."""
    if not ctx.is_admin(request):
        return gr.update(choices=[], value=None), gr.update(choices=[], value=None), None
    with ctx.sessionmaker() as s:
        names, rows = _session_names(s), runs_table(s)
    judges = ctx.engine.available()
    return (gr.update(choices=names, value=names[-1] if names else None),
            gr.update(choices=judges, value=judges[0] if judges else None), rows)


def build_juez(ctx: AppContext):
    """The accordion; returns (load function, its outputs [session, judge, table]) for demo.load."""
    with gr.Accordion("Juez automático", open=False):
        gr.Markdown("Un concursante califica con la rúbrica (1-5) las respuestas de una sesión, como un evaluador "
                    "más pero aparte de los humanos; se reanuda donde quedó. " + NOTE)
        with gr.Row():
            session = gr.Dropdown([], value=None, label="Sesión", allow_custom_value=True, scale=2,
                                  elem_id="juez-sesion")
            judge = gr.Dropdown([], value=None, label="Juez (concursante)", allow_custom_value=True, scale=2,
                                elem_id="juez-concursante")
            criterion = gr.Dropdown([(CRITERION_LABELS.get(c, "Todos (general y los cuatro aspectos)"), c)
                                     for c in CRITERION_CHOICES], value="general", label="Criterio", scale=1,
                                    elem_id="juez-criterio")
            prompt = gr.Radio([(label, key) for key, label in JUDGE_PROMPTS.items()], value="esllm",
                              label="Prompt del juez", scale=2, elem_id="juez-prompt")
        with gr.Row():
            go = gr.Button("Calificar con el juez", variant="primary", elem_id="juez-calificar")
            refresh = gr.Button("Actualizar tabla", elem_id="juez-actualizar")
        summary = gr.Markdown("", elem_id="juez-resumen")
        table = gr.Dataframe(headers=HEADERS, value=None, interactive=False, wrap=True, elem_id="juez-tabla",
                             label="Acuerdo juez–humanos (última ejecución por sesión, juez y criterio)")

        go.click(bind(ctx, grade_handler), [session, judge, criterion, prompt], [summary, table],
                 api_name="juez_calificar",
                 concurrency_limit=1, concurrency_id="juez")
        refresh.click(bind(ctx, table_handler), None, table, api_name="juez_tabla")
    return bind(ctx, load_juez), [session, judge, table]
