"""Automatic tasks (admins only), two accordions to place in a tab: «Preguntas de comprensión lectora»
(N short-answer + M true/false questions from a pasted text, checked by esllm/evals/questions.py) and
«Pictogramas → oración» (BLEU and chrF per contestant on a test set under data/pictos/, by
esllm/evals/pictos.py). Each run is stored as an eval_run row.

API (admins; a rater or an anonymous caller gets "No tiene permiso…" / "Inicie sesión…" and no data):
    preguntas_generar(text, n, m, contestant) -> (questions markdown, problems markdown)
    pictos_evaluar(file_name, contestants, limit) -> (summary markdown, latest-runs table)   # limit 0 = all
    pictos_tabla() -> latest-runs table (concursante, archivo, BLEU, chrF, n, fecha)
Contestant and file lists are filled on load, for admins only. Files are chosen by name and must be a
.jsonl directly under data/pictos/. The three handlers are module-level, declared `@handler("admin")`;
`build_tareas` only lays out and wires.
"""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from esllm import EsllmError
from esllm.evals import pictos, question_checks, questions
from esllm.evals.base import run_contestants
from esllm.ui.context import AppContext, bind, handler


def _contestant(ctx: AppContext, name: Any) -> str:
    if not isinstance(name, str) or name not in ctx.engine.available():
        raise EsllmError(f"Elija un concursante disponible (recibido {name!r}).")
    return name


def _table(ctx: AppContext) -> list[list[Any]]:
    with ctx.sessionmaker() as s:
        return pictos.latest_table(s)


@handler("admin")
def preguntas_generar(ctx: AppContext, text: Any, n: Any, m: Any, contestant: Any,
                      request: gr.Request) -> tuple[str, str]:
    text, n, m = questions.check_request(text, n, m)
    name = _contestant(ctx, contestant)
    [run] = run_contestants(questions.Questions(text, n, m), ctx.sessionmaker, ctx.engine, [name])  # as the CLI
    if run.status != "done":
        raise EsllmError(f"No se pudieron generar las preguntas: {run.error}")
    r = questions.questions_result(run)
    raw = "\n".join("    " + ln for ln in r.raw_output.splitlines()) or "    (vacía)"
    return question_checks.format_questions(r.questions), (
        f"{question_checks.format_violations(r.violations)}\n\n**Salida del modelo** ({name}):\n\n{raw}\n\n"
        f"Guardado como evaluación #{r.run_id}.")


@handler("admin")
def pictos_evaluar(ctx: AppContext, file_name: Any, names: Any, limit: Any, request: gr.Request,
                   progress=gr.Progress()):
    path = pictos.resolve_file(file_name)
    items = pictos.load_pictos(path)
    if limit not in (None, "", 0):
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit) \
                or limit != int(limit) or limit < 0:
            raise EsllmError(f"El número de ítems debe ser un entero ≥ 0 (recibido {limit!r}).")
        items = items[:int(limit)]
    if names is not None and not isinstance(names, list):
        raise EsllmError("Los concursantes deben ser una lista de nombres.")
    names = list(dict.fromkeys(_contestant(ctx, n) for n in (names or [])))
    if not names:
        raise EsllmError("Elija al menos un concursante.")

    def report(done: int, total: int, msg: str) -> None:
        if progress is not None:
            progress((done, total), desc=msg, unit="ítems")

    runs = run_contestants(pictos.Pictos(path), ctx.sessionmaker, ctx.engine, names, items, report)  # as the CLI
    lines = [f"**{path.name}**: {len(items)} ítems × {len(names)} concursante(s)."]
    for r in runs:  # a failed contestant is a line of the summary; the others still ran
        lines.append(f"- {r.contestant}: BLEU {r.metrics['bleu']:.2f} · chrF {r.metrics['chrf']:.2f} (evaluación #{r.id})"
                     if r.status == "done" else f"- {r.contestant}: **error**: {r.error}")
    return "\n".join(lines), _table(ctx)


@handler("admin")
def pictos_tabla(ctx: AppContext, request: gr.Request) -> list[list[Any]]:
    return _table(ctx)


def load_tareas(ctx: AppContext, request: gr.Request):
    """Page load (never raises): for admins the contestant dropdown, the file dropdown, the contestants
    multiselect and the latest-runs table; else empty lists."""
    if not ctx.is_admin(request):
        empty = gr.update(choices=[], value=None)
        return empty, empty, gr.update(choices=[], value=[]), None
    names = ctx.engine.available()
    files = [p.name for p in pictos.list_files()]
    default = pictos.SAMPLE.name if pictos.SAMPLE.name in files else (files[0] if files else None)
    return (gr.update(choices=names, value=names[0] if names else None), gr.update(choices=files, value=default),
            gr.update(choices=names, value=names), _table(ctx))


def build_tareas(ctx: AppContext):
    """Build the two accordions; returns (load function, outputs): on load an admin gets the contestant
    dropdown, the file dropdown, the contestants multiselect and the latest-runs table filled."""
    with gr.Accordion("Preguntas de comprensión lectora", open=False):
        gr.Markdown(f"Pegue un texto en español (hasta {questions.MAX_TEXT_CHARS} caracteres). El concursante "
                    "escribe N preguntas abiertas y M afirmaciones de verdadero o falso, sin respuestas; se "
                    "comprueba el número, que no incluyan respuestas, que no se repitan y su forma.")
        q_text = gr.Textbox(label="Texto", lines=8, max_length=questions.MAX_TEXT_CHARS, elem_id="preguntas-texto")
        with gr.Row():
            # No minimum/maximum on the Numbers: Gradio would refuse out-of-range values with its own English
            # message; questions.check_request refuses them in Spanish.
            q_n = gr.Number(value=3, precision=0, label=f"N: preguntas abiertas (0 a {questions.MAX_PER_KIND})")
            q_m = gr.Number(value=2, precision=0, label=f"M: verdadero o falso (0 a {questions.MAX_PER_KIND})")
            q_who = gr.Dropdown([], value=None, label="Concursante", allow_custom_value=True,
                                elem_id="preguntas-concursante")
        q_go = gr.Button("Generar preguntas", variant="primary", elem_id="preguntas-generar")
        q_out = gr.Markdown("", elem_id="preguntas-resultado")
        q_problems = gr.Markdown("", elem_id="preguntas-problemas")
    with gr.Accordion("Pictogramas → oración", open=False):
        gr.Markdown("Cada ítem son palabras clave de un tablero de pictogramas; el concursante escribe una "
                    "oración y se compara con la de referencia (BLEU y chrF de sacrebleu, a nivel de corpus). "
                    "Archivos: los .jsonl de data/pictos/ (formato en data/pictos/LEEME.md).")
        with gr.Row():
            p_file = gr.Dropdown([], value=None, label="Archivo", allow_custom_value=True, elem_id="pictos-archivo")
            p_who = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="Concursantes",
                                elem_id="pictos-concursantes")
            p_limit = gr.Number(value=0, precision=0, label="Ítems (0 = todos)")  # checked by pictos_evaluar
        with gr.Row():
            p_go = gr.Button("Evaluar", variant="primary", elem_id="pictos-evaluar")
            p_refresh = gr.Button("Actualizar tabla", elem_id="pictos-tabla")
        p_summary = gr.Markdown("", elem_id="pictos-resumen")
        p_table = gr.Dataframe(headers=pictos.TABLE_HEADERS, value=None, interactive=False,
                               label="Última evaluación por concursante y archivo", elem_id="pictos-resultados")

    q_go.click(bind(ctx, preguntas_generar), [q_text, q_n, q_m, q_who], [q_out, q_problems],
               api_name="preguntas_generar", concurrency_limit=1, concurrency_id="tareas")
    p_go.click(bind(ctx, pictos_evaluar), [p_file, p_who, p_limit], [p_summary, p_table], api_name="pictos_evaluar",
               concurrency_limit=1, concurrency_id="tareas")
    p_refresh.click(bind(ctx, pictos_tabla), None, p_table, api_name="pictos_tabla")
    return bind(ctx, load_tareas), [q_who, p_file, p_who, p_table]
