"""Tab «Evaluar»: a rater works through their items of a blind rating session.

The page only ever receives the prompt, earlier turns, three answers under A/B/C, the rubric and
the rater's own progress; the assignment being rated lives in server-side state. The answers and the earlier
turns are shown exactly as stored, never through Markdown (esllm/ui/verbatim.py: gr.HTML, the text
HTML-escaped under `white-space: pre-wrap`), so API clients receive them as that HTML. Every
handler is declared `@handler("rater")` and checks the caller is a rater of that session (the services in
esllm/study/sessions.py check ownership again); the save and the next item share one database session
(`ctx.transaction()`). Handlers are module-level; `build_evaluar` only lays out and wires. Keyboard: a/b/c
choose a column, 1-5 score it, Ctrl+Enter saves.

The screen never traps: a save with a missing score is answered before anything is written, with a Spanish
message in the tab's message area and a note under each column that lacks a score, and every other output
left as it is (the scores already chosen stay). A rater's page opens on their current item (page load), the
session list says each session's progress, and a finished session shows «Sesión terminada» with the count.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import gradio as gr

from esllm import EsllmError
from esllm.store.models import ASPECTS, CRITERION_LABELS, LABELS
from esllm.study.prompts import CATEGORY_LABELS
from esllm.study.sessions import next_item, progress, rater_session, rater_sessions, submit
from esllm.ui.context import AppContext, Caller, bind, handler
from esllm.ui.verbatim import verbatim_html

RUBRIC = """
**Rúbrica (1-5)** — juzgue cada respuesta por su **exactitud** (¿la información es correcta?), **relevancia**
(¿responde lo que se pidió?), **coherencia** (¿el texto es claro y está bien construido?) y **comprensión del
contexto** (¿entiende el tema y el contexto de la pregunta?).

| nota | significado |
|---|---|
| **1 muy deficiente** | errónea o irrelevante, incoherente, sin comprensión del tema |
| **2 deficiente** | varios errores graves, se aparta de la pregunta, incoherencias notables |
| **3 aceptable** | mayormente correcta con algunos errores; responde pero de forma superficial; fallos menores de fluidez |
| **4 bueno** | precisa con errores mínimos; responde por completo; clara y fluida |
| **5 perfecto** | totalmente correcta y detallada; exhaustiva; excepcionalmente clara; capta los matices |

Atajos: **a**/**b**/**c** eligen la columna, **1**-**5** la califican, **Ctrl+Enter** guarda.
"""

SHORTCUTS_JS = """
<script>
(() => {
  let col = "A";
  document.addEventListener("keydown", (e) => {
    const t = e.target; const typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" && t.type === "text");
    if (e.ctrlKey && e.key === "Enter") { document.querySelector("#guardar")?.click(); e.preventDefault(); return; }
    if (typing) return;
    const k = e.key.toLowerCase();
    if (["a", "b", "c"].includes(k)) { col = k.toUpperCase(); return; }
    if (["1", "2", "3", "4", "5"].includes(k)) {
      document.querySelector(`#nota-${col} input[value="${k}"]`)?.click();
    }
  });
})();
</script>
"""

SCORES = ["1", "2", "3", "4", "5"]
ASPECT_LABELS = CRITERION_LABELS
NO_SESSIONS = "No tiene sesiones abiertas. Cuando un administrador le asigne una, aparecerá aquí."
N_ITEM = 5 + 3 + 3 + 12  # state, progress, context, prompt, comment, answers, general, aspects


TURN_STYLE = "border-left: 3px solid var(--border-color-primary); padding-left: 0.8em; margin: 0.4em 0 0.8em;"


def _context_html(item) -> str:
    """The earlier turns of a contextual series: who spoke (Usuario, Modelo A/B/C), then the stored text as is."""
    if not item.context:
        return ""
    turns = []
    for m in item.context:
        who = "Usuario" if m["role"] == "user" else "Modelo " + m["role"].split()[-1]
        turns.append(f'<div class="esllm-turno" style="{TURN_STYLE}"><strong>{who}:</strong>'
                     f'{verbatim_html(m["content"])}</div>')
    return "<p><strong>Turnos anteriores de la conversación</strong></p>" + "".join(turns)


def _int(v: Any) -> Any:
    """Radio values arrive as "1".."5"; anything else is passed on for the service to refuse."""
    return int(v) if isinstance(v, str) and v in SCORES else v


def _session_list(s, rater_id: int, keep: Any = None):
    """The rater's open sessions as dropdown choices that say their progress, and the one to show: `keep` if it
    is still there, else the first with items left (else the first). Also how many have items left."""
    opts, pending = [], []
    for rs in rater_sessions(s, rater_id):
        done, total = progress(s, rs.id, rater_id)
        left = done < total
        opts.append((f"{rs.name} · {done}/{total} hechos" if left else f"{rs.name} · terminada ({total}/{total})",
                     rs.id))
        if left:
            pending.append(rs.id)
    ids = [v for _, v in opts]
    value = keep if keep in ids else (pending[0] if pending else (ids[0] if ids else None))
    return opts, value, len(pending)


def _finished(s, session_id: int, rater_id: int) -> tuple:
    """The «Sesión terminada» view: every item output cleared (a fresh update per radio: Gradio pops "value" from
    the dict it is given, so one dict repeated would clear only the first), the form hidden."""
    done, total = progress(s, session_id, rater_id)
    md = (f"### Sesión terminada\n\nCalificó **{done} de {total}** ítems de esta sesión. Gracias: no queda nada "
          "pendiente. Si tiene otra sesión abierta, elíjala en la lista.")
    radios = ([gr.update(value=None, visible=True) for _ in range(3)]
              + [gr.update(value=None, visible=False) for _ in range(12)])
    return (None, md, "", "", "", "", "", "", *radios)


def show(s, session_id: int, rater_id: int, after_save: bool = False) -> tuple:
    """The rater's next item of the session, as the tab's item outputs (the caller commits `s`).
    `after_save`: `save`'s submit has just checked that this session is open and the rater's, and the aspect
    radios already show or hide as its rubric asks; so no membership query, and the radios get plain values
    instead of gr.update (Gradio builds a new component for every update: ~1 ms of CPU each, 15 radios per save)."""
    if not after_save and rater_session(s, session_id, rater_id) is None:
        raise EsllmError("No participa en esa sesión o ya está cerrada.")
    item = next_item(s, session_id, rater_id)
    if item is None:
        return _finished(s, session_id, rater_id)
    full = "exactitud" in item.criteria
    prev = item.previous
    gen = [str(prev[lb]["general"]) if prev.get(lb) else None for lb in LABELS]
    asp = [str(prev[lb][a]) if prev.get(lb, {}).get(a) else None for lb in LABELS for a in ASPECTS]
    if not after_save:
        gen = [gr.update(value=v) for v in gen]
        asp = [gr.update(visible=full, value=v) for v in asp]
    cat = CATEGORY_LABELS.get(item.category, item.category.replace("_", " ").capitalize())
    return ((session_id, item.assignment_id, time.time(), full), f"**Ítem {item.position} / {item.total}** · {cat}",
            _context_html(item), f"### Instrucción\n\n{item.prompt}", prev.get("comentario", ""),
            *[verbatim_html(item.answers[lb]) for lb in LABELS], *gen, *asp)


def _view(item: tuple, session: Any = None, shown: bool = False) -> tuple:
    """An item view plus the tab's message area and the three column notes (cleared), the form's visibility
    (`shown`: it already shows, leave it) and the session list (`session`: an update, or None to leave it)."""
    done = item[0] is None
    return (*item, "", "", "", "", gr.skip() if shown and not done else gr.update(visible=not done),
            gr.skip() if session is None else session)


def missing_scores(values: tuple, full: bool) -> dict[str, list[str]]:
    """{label: the names of its missing scores} for the 15 radio values (3 general, then 4 aspects per label);
    the aspects count only in `full` mode. Empty when nothing is missing."""
    gen, asp = values[:3], values[3:]
    out: dict[str, list[str]] = {}
    for i, label in enumerate(LABELS):
        lacks = [] if gen[i] not in (None, "") else ["nota general"]
        if full:
            lacks += [ASPECT_LABELS[a] for j, a in enumerate(ASPECTS) if asp[i * len(ASPECTS) + j] in (None, "")]
        if lacks:
            out[label] = lacks
    return out


# ---------------------------------------------------------------------------------------------- handlers
@handler("rater")
def start(ctx: AppContext, session_id: Any, request: gr.Request, *, caller: Optional[Caller] = None) -> tuple:
    """«Continuar» and choosing a session (/evaluar_abrir): the rater's next item of the session."""
    if not isinstance(session_id, int):
        raise EsllmError("Elija una sesión.")
    with ctx.transaction() as s:  # the next item is marked started
        return _view(show(s, session_id, caller.id))


@handler("rater")
def save(ctx: AppContext, st: Any, comment_text: Any, g_a, g_b, g_c, ex_a, re_a, co_a, cm_a, ex_b, re_b, co_b, cm_b,
         ex_c, re_c, co_c, cm_c, request: gr.Request, *, caller: Optional[Caller] = None) -> tuple:
    """«Guardar y seguir» (/evaluar_guardar): save the item's scores, then show the next item. A missing score
    is answered with the message area and the column notes only: nothing written, nothing else changed."""
    # Explicit parameters: Gradio injects `request` only into a named, annotated parameter.
    values = (g_a, g_b, g_c, ex_a, re_a, co_a, cm_a, ex_b, re_b, co_b, cm_b, ex_c, re_c, co_c, cm_c)
    if not st:
        raise EsllmError("No hay ningún ítem abierto: elija una sesión.")
    session_id, assignment_id, shown_at, *rest = st
    lacking = missing_scores(values, bool(rest and rest[0]))
    if lacking:
        names = ", ".join(f"la respuesta {label} ({', '.join(v)})" for label, v in lacking.items())
        message = (f"**No se guardó: falta calificar {names}.** Complete lo indicado bajo cada respuesta y vuelva "
                   "a pulsar «Guardar y seguir»; las notas ya elegidas se conservan.")
        notes = [("Falta: " + ", ".join(lacking[label]) + ".") if label in lacking else "" for label in LABELS]
        return (*[gr.skip()] * N_ITEM, message, *notes, gr.skip(), gr.skip())
    gen, asp = values[:3], values[3:]
    scores: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(LABELS):
        scores[label] = {"general": _int(gen[i])}
        for j, a in enumerate(ASPECTS):
            v = asp[i * len(ASPECTS) + j]
            if v is not None:
                scores[label][a] = _int(v)
    with ctx.transaction() as s:  # one database session for the save and the next item
        asg = submit(s, rater_id=caller.id, assignment_id=assignment_id, scores=scores, comment=comment_text,
                     seconds_spent=time.time() - shown_at)
        s.commit()  # the scores are kept even if showing the next item fails
        item = show(s, session_id, caller.id, after_save=asg.session_id == session_id)
        if item[0] is not None:
            return _view(item, shown=True)
        opts, _, _ = _session_list(s, caller.id)  # this session is done: its entry in the list says so
        return _view(item, session=gr.update(choices=opts, value=session_id))


def _idle(message: str, session: Any) -> tuple:
    """Nothing to rate: the form hidden, a message, the session list."""
    return (None, message, "", "", "", "", "", "", *[gr.skip()] * 15, "", "", "", "", gr.update(visible=False),
            session)


def load_evaluar(ctx: AppContext, request: gr.Request):
    """Page load (never raises): (who, item view…) — for a rater, their open sessions with their progress and the
    current item of the first with items left, so the page opens on it; other callers get a notice."""
    c = ctx.caller(request)
    if c is None or c.role != "rater" or ctx.sessionmaker is None:
        return ("Esta pestaña es para evaluadores con cuenta.",
                *_idle("", gr.update(choices=[], value=None)))
    try:
        with ctx.transaction() as s:  # the current item is marked started
            opts, value, pending = _session_list(s, c.id)
            who = f"Evaluador: **{c.name}** · la lista dice el avance de cada sesión abierta"
            session = gr.update(choices=opts, value=value)
            if value is None:
                return (who, *_idle(NO_SESSIONS, session))
            return (who, *_view(show(s, value, c.id), session=session))
    except EsllmError as e:
        return (f"Evaluador: **{c.name}**", *_idle(str(e), gr.skip()))


def refresh_sessions(ctx: AppContext, current: Any, request: gr.Request):
    """The tab was opened: the rater's session list again (a new session appears), the chosen one kept."""
    c = ctx.caller(request)
    if c is None or c.role != "rater" or ctx.sessionmaker is None:
        return gr.skip()
    with ctx.sessionmaker() as s:
        opts, value, _ = _session_list(s, c.id, keep=current)
    return gr.update(choices=opts, value=value)


# ---------------------------------------------------------------------------------------------- layout
def build_evaluar(ctx: AppContext):
    """Build the tab; returns (load function, outputs). The session list is filled on load, per rater."""
    with gr.Tab("Evaluar", id="evaluar") as tab:
        who = gr.Markdown("", elem_id="evaluador")
        with gr.Row():
            # Choices are filled per rater on load; the handler checks membership, so any value may be sent.
            session = gr.Dropdown([], value=None, label="Sesión de calificación", elem_id="sesion", scale=3,
                                  allow_custom_value=True)
            start_btn = gr.Button("Continuar", elem_id="comenzar", scale=1)
        state = gr.State(None)  # server-side: (session id, assignment id, time shown, full rubric)
        message = gr.Markdown("", elem_id="evaluar-mensaje", elem_classes="esllm-mensaje")  # the one message area
        progress_md = gr.Markdown("", elem_id="progreso")
        with gr.Column(visible=False) as form:
            # gr.HTML, not gr.Markdown: the stored answers must reach the rater unchanged (esllm/ui/verbatim.py)
            context = gr.HTML("", elem_id="contexto", js_on_load=None)
            prompt = gr.Markdown("", elem_id="prompt")
            cols: dict[str, dict[str, Any]] = {}
            # Answers in one row and the scores in the next, so the radios line up whatever the answers' lengths.
            with gr.Row(equal_height=True):
                for label in LABELS:
                    with gr.Column(elem_classes="esllm-columna"):
                        gr.HTML(f"<h3 class='esllm-titulo'>Respuesta {label}</h3>", elem_id=f"titulo-{label}",
                                js_on_load=None)
                        ans = gr.HTML("", elem_id=f"respuesta-{label}", container=True, padding=True,
                                      js_on_load=None)
                        cols[label] = {"answer": ans}
            with gr.Row():
                for label in LABELS:
                    with gr.Column():
                        cols[label]["general"] = gr.Radio(SCORES, value=None, label=f"Nota de la respuesta {label}",
                                                          elem_id=f"nota-{label}")
                        cols[label]["aspects"] = [
                            gr.Radio(SCORES, value=None, label=f"{ASPECT_LABELS[a]} (respuesta {label})",
                                     visible=False, elem_id=f"{a}-{label}") for a in ASPECTS]
                        cols[label]["note"] = gr.Markdown("", elem_id=f"falta-{label}", elem_classes="esllm-falta")
            comment = gr.Textbox(label="Comentario (opcional)", lines=2, max_lines=6, elem_id="comentario")
            save_btn = gr.Button("Guardar y seguir", variant="primary", elem_id="guardar")
        with gr.Accordion("Rúbrica", open=True):
            gr.Markdown(RUBRIC)

        answer_outs = [cols[label]["answer"] for label in LABELS]
        general_outs = [cols[label]["general"] for label in LABELS]
        aspect_outs = [r for label in LABELS for r in cols[label]["aspects"]]
        notes = [cols[label]["note"] for label in LABELS]
        item_outs = [state, progress_md, context, prompt, comment, *answer_outs, *general_outs, *aspect_outs,
                     message, *notes, form, session]

        start_btn.click(bind(ctx, start), session, item_outs, api_name="evaluar_abrir")
        session.input(bind(ctx, start), session, item_outs, api_name=False)  # choosing a session opens it
        save_btn.click(bind(ctx, save), [state, comment, *general_outs, *aspect_outs], item_outs,
                       api_name="evaluar_guardar", concurrency_limit=None)
        tab.select(bind(ctx, refresh_sessions), session, session, api_name=False)
        session.focus(bind(ctx, refresh_sessions), session, session, api_name=False)  # a new session shows up
    return bind(ctx, load_evaluar), [who, *item_outs]
