"""Tab «Administrar»: answers in batch, picking the best attempt, rating sessions, importing prompt sets.

Admins only: every handler is declared `@handler("admin")`, checked before it reads or writes anything,
and raters load this same page, so nothing in its initial config names a contestant, a rater or a
set: dropdowns are filled on load for admins (and bundled prompt sets are imported then). The work
itself is in esllm/study/answers.py, esllm/study/sessions.py and esllm/study/admin.py; the module-level
handlers only check and format, writes go through `ctx.transaction()`, and `build_administrar` only lays
out and wires.
"""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr
from sqlalchemy.exc import IntegrityError

from esllm import EsllmError
from esllm.study import admin
from esllm.study.answers import generate_answers, select_attempt
from esllm.study.attempts import parse_vary
from esllm.study.prompts import MAX_FILE_BYTES, MAX_ROWS, ensure_bundled_sets
from esllm.study.sessions import SESSION_NAME_MAX
from esllm.ui.context import AppContext, Caller, bind, handler
from esllm.ui.entrenar import build_entrenar
from esllm.ui.uploads import discard_upload

SESSION_HEADERS = ["sesión", "conjunto", "modo", "k", "estado", "concursantes", "progreso (hechos/total)"]
ATTEMPT_HEADERS = ["intento", "elegido", "tokens", "latencia (s)", "EOS", "texto", "idéntico a", "parámetros"]
COVERAGE_HEADERS = ["concursante", "prompts con respuesta elegida", "prompts del conjunto", "respuestas guardadas",
                    "prompts con intentos idénticos"]
NOT_ADMIN = "«Administrar» es solo para administradores."
N_SET_DROPDOWNS = 3  # the prompt-set dropdowns of «Respuestas en lote», «Intentos» and «Sesiones»


def _sessions_table(s) -> list[list[Any]]:
    return [[x.name, x.set_name, x.mode, x.k, admin.STATUS_ES.get(x.status, x.status), ", ".join(x.contestants),
             x.progress_text] for x in admin.list_sessions(s)]


def _open_sessions(s) -> list[str]:
    return [x.name for x in admin.list_sessions(s) if x.status == "open"]


def _coverage_table(s, set_name: str) -> list[list[Any]]:
    return [list(row) for row in admin.coverage(s, set_name)]


def _ids(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise EsllmError(f"Elija {what}.")
    return int(value)


def _set_updates(s, keep: Any = None) -> list:
    """The same choices for the three prompt-set dropdowns, `keep` selected if it exists."""
    names = admin.set_names(s)
    value = keep if keep in names else (names[0] if names else None)
    return [gr.update(choices=names, value=value) for _ in range(N_SET_DROPDOWNS)]


def _attempts_rows(s, contestant_id: int, prompt_id: int) -> list[list[Any]]:
    answers = admin.attempts(s, prompt_id, contestant_id)
    same = admin.identical_to(answers)
    return [[a.attempt, "sí" if a.selected else "", a.new_tokens, round(a.latency_s, 2),
             "sí" if a.ended_on_eos else "no", a.text, same.get(a.attempt, ""), _params_text(a.params)]
            for a in answers]


def _params_text(params: Any) -> str:
    keys = ("preset", "temperature", "top_k", "top_p", "num_beams", "penalty_alpha", "repetition_penalty",
            "max_new_tokens", "seed")
    return " ".join(f"{k}={params[k]}" for k in keys if isinstance(params, dict) and k in params)


def _sessions_choice(opened: list[str], value: Any = None):
    return gr.update(choices=opened, value=value if value is not None else (opened[0] if opened else None))


# ---------------------------------------------------------------------------------------------- answers in batch
@handler("admin")
def generate(ctx: AppContext, set_name: Any, names: Any, attempts: Any, max_tokens: Any, request: gr.Request,
             progress=gr.Progress(), vary: Any = ""):
    """«Generar» (/lote_generar): answers for the set, resumable; (summary markdown, coverage table).
    `vary` (the last input, after Gradio's injected request and progress): how attempts 2..N differ in this run
    (esllm/study/attempts.parse_vary; empty: each contestant's own)."""
    if not set_name:
        raise EsllmError("Elija un conjunto de prompts.")
    names = [n for n in (names or []) if n]
    if not names:
        raise EsllmError("Elija al menos un concursante.")
    stop = ctx.new_stop(f"{request.session_hash or 'anon'}:lote")

    def report(done: int, total: int, msg: str) -> None:
        progress((done, total), desc=msg, unit="respuestas")

    tokens = _ids(max_tokens or 0, "los tokens")
    if tokens < 0:
        raise EsllmError("Máx. tokens nuevos: 0 (los del preset) o un número positivo.")
    rep = generate_answers(ctx.sessionmaker, ctx.engine, set_name, names, _ids(attempts, "los intentos"),
                           vary=parse_vary(vary if isinstance(vary, str) else ""), max_new_tokens=tokens or None,
                           progress=report, stop=stop)
    stopped = " **Detenido**: vuelva a pulsar «Generar» para continuar." if stop.is_set() else ""
    lines = [f"**{rep.generated} generadas, {rep.skipped} ya estaban, {len(rep.errors)} errores** "
             f"(de {rep.total}).{stopped}"]
    lines += [f"- {e}" for e in rep.errors[:20]]
    with ctx.sessionmaker() as s:
        return "\n".join(lines), _coverage_table(s, set_name)


@handler("admin")
def stop_generate(ctx: AppContext, request: gr.Request) -> None:
    ctx.stop(f"{request.session_hash or 'anon'}:lote")


# ---------------------------------------------------------------------------------------------- attempts
@handler("admin", idle=lambda: (gr.update(choices=[], value=None), gr.update(choices=[], value=None), []))
def attempt_set(ctx: AppContext, set_name: Any, request: gr.Request):
    """The «Intentos» set changed (/intentos_conjunto): its contestants with answers and its prompts."""
    with ctx.sessionmaker() as s:
        who, prompts = admin.snapshots_with_answers(s, set_name), admin.prompt_choices(s, set_name)
    return (gr.update(choices=who, value=who[0][1] if who else None),
            gr.update(choices=prompts, value=prompts[0][1] if prompts else None), [])


@handler("admin", idle=lambda: [])  # a non-admin's page loads both lists empty
def attempts_table(ctx: AppContext, contestant_id: Any, prompt_id: Any, request: gr.Request) -> list[list[Any]]:
    """The attempts of one contestant on one prompt."""
    if prompt_id in (None, ""):
        return []
    with ctx.sessionmaker() as s:
        return _attempts_rows(s, _ids(contestant_id, "un concursante"), _ids(prompt_id, "un prompt"))


@handler("admin")
def choose_attempt(ctx: AppContext, contestant_id: Any, prompt_id: Any, attempt: Any, request: gr.Request):
    """«Marcar como mejor» (/intentos_elegir): the attempt raters will see; the attempts table again."""
    cid, pid, n = _ids(contestant_id, "un concursante"), _ids(prompt_id, "un prompt"), _ids(attempt, "un intento")
    with ctx.transaction() as s:
        select_attempt(s, pid, cid, n)
        rows = _attempts_rows(s, cid, pid)
        problems = admin.prompt_series_problems(s, pid, cid)
    gr.Info(f"Intento {n} elegido.")
    for p in problems:  # a contextual series: later turns were written after another history
        gr.Warning(f"Hay que regenerar o volver a elegir: {p}")
    return rows


# ---------------------------------------------------------------------------------------------- sessions
@handler("admin", idle=lambda: gr.update(choices=[], value=[]))
def session_contestants(ctx: AppContext, set_name: Any, request: gr.Request):
    """The «Sesiones» set changed (/sesion_concursantes): contestants with a chosen answer for every prompt."""
    with ctx.sessionmaker() as s:
        names = list(admin.complete_snapshots(s, set_name))
    return gr.update(choices=names, value=[])


@handler("admin")
def create(ctx: AppContext, name: Any, set_name: Any, names: Any, raters: Any, k: Any, mode: Any,
           request: gr.Request, *, caller: Optional[Caller] = None):
    """«Crear sesión» (/sesion_crear): (message, sessions table, open-session dropdown)."""
    with ctx.transaction() as s:
        rs = admin.create_named_session(s, name=name or "", set_name=set_name or "", contestants=list(names or []),
                                        raters=list(raters or []), k=_ids(k, "k"), mode=mode or "general",
                                        created_by=caller.id)
        out = (f"Sesión **{rs.name}** creada.", _sessions_table(s), _sessions_choice(_open_sessions(s), rs.name))
    return out


@handler("admin")
def list_sessions(ctx: AppContext, request: gr.Request):
    """«Actualizar lista» (/sesiones_listar): (sessions table, open-session dropdown)."""
    with ctx.sessionmaker() as s:
        return _sessions_table(s), _sessions_choice(_open_sessions(s))


@handler("admin")
def close(ctx: AppContext, name: Any, request: gr.Request):
    """«Cerrar sesión» (/sesion_cerrar): (message, sessions table, open-session dropdown)."""
    with ctx.transaction() as s:
        rs = admin.close_session(s, name or "")
        out = (f"Sesión **{rs.name}** cerrada.", _sessions_table(s), _sessions_choice(_open_sessions(s)))
    return out


# ---------------------------------------------------------------------------------------------- import
@handler("admin")
def import_prompts(ctx: AppContext, path: Any, set_name: Any, request: gr.Request):
    """«Importar» (/prompts_importar): (message, the three set dropdowns). A bad file imports nothing."""
    if not path:
        raise EsllmError("Suba un archivo .jsonl o .csv.")
    try:
        with ctx.transaction() as s:
            done = admin.import_prompts(s, set_name, path, description="importado desde «Administrar»")
            updates = _set_updates(s, keep=done.set_name)
    except EsllmError as e:  # shown inline under the button (a file's errors are a list of lines), not as a toast
        return (str(e).replace("\n", "\n\n"), *[gr.skip()] * N_SET_DROPDOWNS)
    discard_upload(path)  # imported: nothing of it stays in Gradio's upload cache (a refused file waits for the sweep)
    return (f"Conjunto **{done.set_name}** importado: {done.rows} prompts en el archivo, {done.new} nuevos.", *updates)


# ---------------------------------------------------------------------------------------------- page load
def load_administrar(ctx: AppContext, request: gr.Request):
    """Page load (never raises): for admins, the bundled sets imported and every list filled; else a notice.
    Outputs: notice, the three set dropdowns, batch contestants, raters, sessions table, open-session dropdown."""
    c = ctx.caller(request)
    if c is None or c.role != "admin" or ctx.sessionmaker is None:
        return (NOT_ADMIN, *[gr.skip()] * (N_SET_DROPDOWNS + 4))
    try:
        with ctx.transaction() as s:
            ensure_bundled_sets(s)
    except IntegrityError:  # another admin's page imported them at the same moment
        pass
    with ctx.sessionmaker() as s:
        return (f"Administrador: **{c.name}**", *_set_updates(s), gr.update(choices=ctx.engine.available(), value=[]),
                gr.update(choices=admin.rater_names(s), value=[]), _sessions_table(s),
                _sessions_choice(_open_sessions(s)))


# ---------------------------------------------------------------------------------------------- layout
def build_administrar(ctx: AppContext):
    """Build the tab; returns (load function, outputs) like the other tabs."""
    # Numbers carry no minimum/maximum (Gradio would refuse with its own English message); the handlers and the
    # services check every value in Spanish. Name boxes stop typing at the server's caps (which stay the check).
    with gr.Tab("Administrar", id="administrar") as tab:
        notice = gr.Markdown("", elem_id="admin-aviso")
        with gr.Accordion("Respuestas en lote", open=True):
            with gr.Row():
                gen_set = gr.Dropdown([], value=None, label="Conjunto de prompts", allow_custom_value=True,
                                      elem_id="lote-conjunto")
                gen_who = gr.Dropdown([], value=[], multiselect=True, label="Concursantes", allow_custom_value=True,
                                      elem_id="lote-concursantes")
                gen_attempts = gr.Number(3, precision=0, label="Intentos por prompt (1 a 20)")
                gen_tokens = gr.Number(0, precision=0, label="Máx. tokens nuevos (0 = los del preset)")
            gen_vary = gr.Textbox("", max_lines=1, elem_id="lote-variar",
                                  label="Variar intentos 2..N (vacío = lo que dice la configuración de cada concursante)",
                                  placeholder="p. ej. top-p  ·  top-k:temperature=0.8; beam")
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
                att_pick = gr.Number(1, precision=0, label="Intento a elegir")
                att_go = gr.Button("Marcar como mejor", variant="primary")
        with gr.Accordion("Sesiones de calificación", open=True):
            with gr.Row():
                ses_name = gr.Textbox(label="Nombre de la nueva sesión", max_lines=1, max_length=SESSION_NAME_MAX)
                ses_set = gr.Dropdown([], value=None, label="Conjunto", allow_custom_value=True)
                ses_mode = gr.Radio([("general (una nota)", "general"), ("completa (nota + 4 aspectos)", "full")],
                                    value="general", label="Rúbrica")
                ses_k = gr.Number(2, precision=0, label="Evaluadores por ítem (k)")
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
                        f"`reference`), de hasta {MAX_FILE_BYTES // 2**20} MB y {MAX_ROWS} prompts. Un archivo con "
                        "errores no importa nada.")
            with gr.Row():
                # no file_types: Gradio refuses another type in English; parse_prompt_file says it in Spanish
                imp_file = gr.File(type="filepath", label="Archivo (.jsonl o .csv)")
                imp_name = gr.Textbox(label="Nombre del conjunto", max_lines=1, max_length=admin.SET_NAME_MAX)
            imp_go = gr.Button("Importar", variant="primary")
            imp_msg = gr.Markdown("")
        build_entrenar(ctx)  # «Entrenar un adaptador» (esllm/ui/entrenar.py)

        set_dropdowns = [gen_set, att_set, ses_set]
        generated = gen_go.click(bind(ctx, generate), [gen_set, gen_who, gen_attempts, gen_tokens, gen_vary],
                                 [gen_summary, gen_cov], api_name="lote_generar", concurrency_limit=1,
                                 concurrency_id="lote")
        gen_stop.click(bind(ctx, stop_generate), None, None, api_name="lote_detener", queue=False)

        att_set.change(bind(ctx, attempt_set), att_set, [att_who, att_prompt, att_table], api_name="intentos_conjunto")
        for dd in (att_who, att_prompt):
            dd.change(bind(ctx, attempts_table), [att_who, att_prompt], att_table, api_name=False)
        att_go.click(bind(ctx, choose_attempt), [att_who, att_prompt, att_pick], att_table, api_name="intentos_elegir")

        ses_set.change(bind(ctx, session_contestants), ses_set, ses_who, api_name="sesion_concursantes")
        generated.success(bind(ctx, session_contestants), ses_set, ses_who, api_name=False)  # newly complete
        ses_create.click(bind(ctx, create), [ses_name, ses_set, ses_who, ses_raters, ses_k, ses_mode],
                         [ses_msg, ses_table, ses_close_name], api_name="sesion_crear")
        ses_refresh.click(bind(ctx, list_sessions), None, [ses_table, ses_close_name], api_name="sesiones_listar")
        tab.select(bind(ctx, list_sessions), None, [ses_table, ses_close_name], api_name=False)  # fresh on open
        ses_close.click(bind(ctx, close), ses_close_name, [ses_msg, ses_table, ses_close_name], api_name="sesion_cerrar")

        imp_go.click(bind(ctx, import_prompts), [imp_file, imp_name], [imp_msg, *set_dropdowns],
                     api_name="prompts_importar")

    load_outputs = [notice, *set_dropdowns, gen_who, ses_raters, ses_table, ses_close_name]
    return bind(ctx, load_administrar), load_outputs
