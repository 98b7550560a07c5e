"""Tab «Administrar»: answers in batch, picking the best attempt, rating sessions, importing prompt sets.

Admins only: every handler asks `ctx.require(request, "admin")` before it reads or writes anything,
and raters load this same page, so nothing in its initial config names a contestant, a rater or a
set: dropdowns are filled on load for admins (and bundled prompt sets are imported then). The work
itself is in esllm/study/answers.py, esllm/study/sessions.py and esllm/study/admin.py; handlers only format.
"""

from __future__ import annotations

import random
from typing import Any

import gradio as gr
from sqlalchemy.exc import IntegrityError

from esllm import EsllmError
from esllm.study import admin
from esllm.study.answers import generate_answers, select_attempt
from esllm.study.prompts import ensure_bundled_sets, import_prompt_set, parse_prompt_file
from esllm.study.sessions import create_session
from esllm.ui.context import AppContext

SESSION_HEADERS = ["sesión", "conjunto", "modo", "k", "estado", "concursantes", "progreso (hechos/total)"]
ATTEMPT_HEADERS = ["intento", "elegido", "tokens", "latencia (s)", "EOS", "texto"]
COVERAGE_HEADERS = ["concursante", "prompts con respuesta elegida", "prompts del conjunto", "respuestas guardadas"]
NOT_ADMIN = "«Administrar» es solo para administradores."


def _err(e: EsllmError) -> gr.Error:
    return gr.Error(str(e), print_exception=False)


def _sessions_table(s) -> list[list[Any]]:
    return [[x.name, x.set_name, x.mode, x.k, admin.STATUS_ES.get(x.status, x.status), ", ".join(x.contestants),
             x.progress_text] for x in admin.list_sessions(s)]


def _open_sessions(s) -> list[str]:
    return [x.name for x in admin.list_sessions(s) if x.status == "open"]


def _coverage_table(s, set_name: str) -> list[list[Any]]:
    return [list(row) for row in admin.coverage(s, set_name)]


def _ids(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise gr.Error(f"Elija {what}.", print_exception=False)
    return int(value)


def build_administrar(ctx: AppContext):
    """Build the tab; returns (load function, outputs) like the other tabs."""
    with gr.Tab("Administrar", id="administrar"):
        notice = gr.Markdown("", elem_id="admin-aviso")
        with gr.Accordion("Respuestas en lote", open=True):
            with gr.Row():
                gen_set = gr.Dropdown([], value=None, label="Conjunto de prompts", allow_custom_value=True,
                                      elem_id="lote-conjunto")
                gen_who = gr.Dropdown([], value=[], multiselect=True, label="Concursantes", allow_custom_value=True,
                                      elem_id="lote-concursantes")
                gen_attempts = gr.Number(3, precision=0, minimum=1, maximum=20, label="Intentos por prompt")
                gen_tokens = gr.Number(0, precision=0, minimum=0, label="Máx. tokens nuevos (0 = los del preset)")
            with gr.Row():
                gen_go = gr.Button("Generar", variant="primary", elem_id="generar")
                gen_stop = gr.Button("Detener", variant="stop", elem_id="lote-detener")
            gen_summary = gr.Markdown("Lo ya generado se conserva: volver a pulsar «Generar» continúa donde quedó.",
                                      elem_id="lote-resumen")
            gen_cov = gr.Dataframe(headers=COVERAGE_HEADERS, value=[], interactive=False, label="Cobertura")
        with gr.Accordion("Intentos", open=False):
            with gr.Row():
                att_set = gr.Dropdown([], value=None, label="Conjunto", allow_custom_value=True)
                att_who = gr.Dropdown([], value=None, label="Concursante", allow_custom_value=True)
                att_prompt = gr.Dropdown([], value=None, label="Prompt", allow_custom_value=True, scale=2)
            att_table = gr.Dataframe(headers=ATTEMPT_HEADERS, value=[], interactive=False, wrap=True,
                                     label="Intentos (el elegido es el que ven los evaluadores)")
            with gr.Row():
                att_pick = gr.Number(1, precision=0, minimum=1, label="Intento a elegir")
                att_go = gr.Button("Marcar como mejor", variant="primary")
        with gr.Accordion("Sesiones de calificación", open=True):
            with gr.Row():
                ses_name = gr.Textbox(label="Nombre de la nueva sesión", max_lines=1)
                ses_set = gr.Dropdown([], value=None, label="Conjunto", allow_custom_value=True)
                ses_mode = gr.Radio([("general (una nota)", "general"), ("completa (nota + 4 aspectos)", "full")],
                                    value="general", label="Rúbrica")
                ses_k = gr.Number(2, precision=0, minimum=1, label="Evaluadores por ítem (k)")
            with gr.Row():
                ses_who = gr.Dropdown([], value=[], multiselect=True, max_choices=3, allow_custom_value=True,
                                      label="Tres concursantes (con respuestas elegidas para todo el conjunto)")
                ses_raters = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="Evaluadores")
            ses_create = gr.Button("Crear sesión", variant="primary", elem_id="crear-sesion")
            ses_msg = gr.Markdown("")
            ses_table = gr.Dataframe(headers=SESSION_HEADERS, value=[], interactive=False, label="Sesiones")
            with gr.Row():
                ses_refresh = gr.Button("Actualizar lista")
                ses_close_name = gr.Dropdown([], value=None, label="Sesión abierta", allow_custom_value=True)
                ses_close = gr.Button("Cerrar sesión", variant="stop")
        with gr.Accordion("Importar prompts", open=False):
            gr.Markdown("Archivo `.jsonl` o `.csv` con `id`, `category`, `text` (y opcionalmente `series`, `turn`, "
                        "`reference`). Un archivo con errores no importa nada.")
            with gr.Row():
                imp_file = gr.File(file_types=[".jsonl", ".csv"], type="filepath", label="Archivo")
                imp_name = gr.Textbox(label="Nombre del conjunto", max_lines=1)
            imp_go = gr.Button("Importar", variant="primary")
            imp_msg = gr.Markdown("")

        set_dropdowns = [gen_set, att_set, ses_set]

        def _admin(request):
            try:
                return ctx.require(request, "admin")
            except EsllmError as e:
                raise _err(e) from None

        def set_updates(s, keep: Any = None) -> list:
            names = admin.set_names(s)
            value = keep if keep in names else (names[0] if names else None)
            return [gr.update(choices=names, value=value) for _ in set_dropdowns]

        # ----------------------------------------------------------------- answers in batch
        def on_generate(set_name, names, attempts, max_tokens, request: gr.Request, progress=gr.Progress()):
            _admin(request)
            if not set_name:
                raise gr.Error("Elija un conjunto de prompts.", print_exception=False)
            names = [n for n in (names or []) if n]
            if not names:
                raise gr.Error("Elija al menos un concursante.", print_exception=False)
            stop = ctx.new_stop(f"{request.session_hash or 'anon'}:lote")

            def report(done: int, total: int, msg: str) -> None:
                progress((done, total), desc=msg, unit="respuestas")

            try:
                rep = generate_answers(ctx.sessionmaker, ctx.engine, set_name, names, _ids(attempts, "los intentos"),
                                       max_new_tokens=_ids(max_tokens or 0, "los tokens") or None, progress=report,
                                       stop=stop)
            except EsllmError as e:
                raise _err(e) from None
            stopped = " **Detenido**: vuelva a pulsar «Generar» para continuar." if stop.is_set() else ""
            lines = [f"**{rep.generated} generadas, {rep.skipped} ya estaban, {len(rep.errors)} errores** "
                     f"(de {rep.total}).{stopped}"]
            lines += [f"- {e}" for e in rep.errors[:20]]
            with ctx.sessionmaker() as s:
                return "\n".join(lines), _coverage_table(s, set_name)

        def on_stop_generate(request: gr.Request):
            _admin(request)
            ctx.stop(f"{request.session_hash or 'anon'}:lote")

        generated = gen_go.click(on_generate, [gen_set, gen_who, gen_attempts, gen_tokens], [gen_summary, gen_cov],
                                 api_name="lote_generar", concurrency_limit=1, concurrency_id="lote")
        gen_stop.click(on_stop_generate, None, None, api_name="lote_detener", queue=False)

        # ----------------------------------------------------------------- attempts
        def on_attempt_set(set_name, request: gr.Request):
            if not set_name:  # a non-admin's empty page: nothing to do, no error toast
                return gr.update(choices=[], value=None), gr.update(choices=[], value=None), []
            _admin(request)
            try:
                with ctx.sessionmaker() as s:
                    who, prompts = admin.snapshots_with_answers(s, set_name), admin.prompt_choices(s, set_name)
            except EsllmError as e:
                raise _err(e) from None
            return (gr.update(choices=who, value=who[0][1] if who else None),
                    gr.update(choices=prompts, value=prompts[0][1] if prompts else None), [])

        def attempts_rows(s, contestant_id, prompt_id) -> list[list[Any]]:
            return [[a.attempt, "✓" if a.selected else "", a.new_tokens, round(a.latency_s, 2),
                     "sí" if a.ended_on_eos else "no", a.text] for a in admin.attempts(s, prompt_id, contestant_id)]

        def on_attempts(contestant_id, prompt_id, request: gr.Request):
            if contestant_id in (None, "") or prompt_id in (None, ""):
                return []
            _admin(request)
            with ctx.sessionmaker() as s:
                return attempts_rows(s, _ids(contestant_id, "un concursante"), _ids(prompt_id, "un prompt"))

        def on_select(contestant_id, prompt_id, attempt, request: gr.Request):
            _admin(request)
            cid, pid, n = _ids(contestant_id, "un concursante"), _ids(prompt_id, "un prompt"), _ids(attempt, "un intento")
            with ctx.sessionmaker() as s:
                try:
                    select_attempt(s, pid, cid, n)
                    s.commit()
                except EsllmError as e:
                    s.rollback()
                    raise _err(e) from None
                gr.Info(f"Intento {n} elegido.")
                return attempts_rows(s, cid, pid)

        att_set.change(on_attempt_set, att_set, [att_who, att_prompt, att_table], api_name="intentos_conjunto")
        for dd in (att_who, att_prompt):
            dd.change(on_attempts, [att_who, att_prompt], att_table, api_name=False)
        att_go.click(on_select, [att_who, att_prompt, att_pick], att_table, api_name="intentos_elegir")

        # ----------------------------------------------------------------- sessions
        def on_session_set(set_name, request: gr.Request):
            if not set_name:
                return gr.update(choices=[], value=[])
            _admin(request)
            try:
                with ctx.sessionmaker() as s:
                    names = list(admin.complete_snapshots(s, set_name))
            except EsllmError as e:
                raise _err(e) from None
            return gr.update(choices=names, value=[])

        def on_create(name, set_name, names, raters, k, mode, request: gr.Request):
            c = _admin(request)
            with ctx.sessionmaker() as s:
                try:
                    snaps = admin.resolve_contestants(s, set_name or "", [n for n in (names or []) if n])
                    rs = create_session(s, name=name or "", prompt_set=set_name or "",
                                        contestant_ids=[x.id for x in snaps], raters=list(raters or []),
                                        k=_ids(k, "k"), rubric_mode=mode or "general", created_by=c.id,
                                        rng=random.Random())
                    s.commit()
                except EsllmError as e:
                    s.rollback()
                    raise _err(e) from None
                opened = _open_sessions(s)
                return (f"✅ Sesión **{rs.name}** creada.", _sessions_table(s),
                        gr.update(choices=opened, value=rs.name))

        def on_list(request: gr.Request):
            _admin(request)
            with ctx.sessionmaker() as s:
                opened = _open_sessions(s)
                return _sessions_table(s), gr.update(choices=opened, value=opened[0] if opened else None)

        def on_close(name, request: gr.Request):
            _admin(request)
            with ctx.sessionmaker() as s:
                try:
                    rs = admin.close_session(s, name or "")
                    s.commit()
                except EsllmError as e:
                    s.rollback()
                    raise _err(e) from None
                opened = _open_sessions(s)
                return (f"Sesión **{rs.name}** cerrada.", _sessions_table(s),
                        gr.update(choices=opened, value=opened[0] if opened else None))

        ses_set.change(on_session_set, ses_set, ses_who, api_name="sesion_concursantes")
        generated.success(on_session_set, ses_set, ses_who, api_name=False)  # newly complete contestants
        ses_create.click(on_create, [ses_name, ses_set, ses_who, ses_raters, ses_k, ses_mode],
                         [ses_msg, ses_table, ses_close_name], api_name="sesion_crear")
        ses_refresh.click(on_list, None, [ses_table, ses_close_name], api_name="sesiones_listar")
        ses_close.click(on_close, ses_close_name, [ses_msg, ses_table, ses_close_name], api_name="sesion_cerrar")

        # ----------------------------------------------------------------- import
        def on_import(path, set_name, request: gr.Request):
            _admin(request)
            if not path:
                raise gr.Error("Suba un archivo .jsonl o .csv.", print_exception=False)
            with ctx.sessionmaker() as s:
                try:
                    name = admin.check_set_name(set_name)
                    rows = parse_prompt_file(path)
                    before = len(admin.prompt_choices(s, name)) if name in admin.set_names(s) else 0
                    import_prompt_set(s, name, rows, description="importado desde «Administrar»")
                    s.commit()
                except EsllmError as e:
                    s.rollback()
                    return (f"❌ {e}".replace("\n", "\n\n"), *[gr.skip()] * len(set_dropdowns))
                msg = f"✅ Conjunto **{name}**: {len(rows)} prompts en el archivo, {len(rows) - before} nuevos."
                return (msg, *set_updates(s, keep=name))

        imp_go.click(on_import, [imp_file, imp_name], [imp_msg, *set_dropdowns], api_name="prompts_importar")

        # ----------------------------------------------------------------- page load
        load_outputs = [notice, *set_dropdowns, gen_who, ses_raters, ses_table, ses_close_name]

        def on_load(request: gr.Request):
            c = ctx.caller(request)
            if c is None or c.role != "admin" or ctx.sessionmaker is None:
                return (NOT_ADMIN, *[gr.skip()] * (len(load_outputs) - 1))
            with ctx.sessionmaker() as s:
                try:
                    ensure_bundled_sets(s)
                    s.commit()
                except IntegrityError:  # another admin's page imported them at the same moment
                    s.rollback()
                names = [x.name for x in ctx.engine.contestants.values() if x.available]
                opened = _open_sessions(s)
                return (f"Administrador: **{c.name}**", *set_updates(s), gr.update(choices=names, value=[]),
                        gr.update(choices=admin.rater_names(s), value=[]), _sessions_table(s),
                        gr.update(choices=opened, value=opened[0] if opened else None))

    return on_load, load_outputs
