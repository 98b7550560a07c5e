"""Tab «Evaluar»: a rater works through their items of a blind rating session.

The page only ever receives the prompt, earlier turns, three answers under A/B/C, the rubric and
the rater's own progress; the assignment being rated lives in server-side state. The answers and the earlier
turns are shown exactly as stored, never through Markdown (esllm/ui/verbatim.py: gr.HTML, the text
HTML-escaped under `white-space: pre-wrap`), so API clients receive them as that HTML. Every
handler is declared `@handler("rater")` and checks the caller is a rater of that session (the services in
esllm/study/sessions.py check ownership again); the save and the next item share one database session
(`ctx.transaction()`). Handlers are module-level; `build_evaluar` only lays out and wires. Keyboard: a/b/c
choose a column, 1-5 score it, Ctrl+Enter saves.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import gradio as gr

from esllm import EsllmError
from esllm.store.models import ASPECTS, LABELS
from esllm.study.sessions import next_item, rater_session, rater_sessions, submit
from esllm.ui.context import AppContext, Caller, bind, handler
from esllm.ui.verbatim import verbatim_html

RUBRIC = """
**Rúbrica (1-5)** — juzgue cada respuesta por su **exactitud** (¿la información es correcta?), **relevancia**
(¿responde lo que se pidió?), **coherencia** (¿el texto es claro y está bien construido?) y **comprensión del
contexto** (¿entiende el tema y el contexto de la pregunta?).

| | |
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
ASPECT_LABELS = {"exactitud": "Exactitud", "relevancia": "Relevancia", "coherencia": "Coherencia",
                 "comprension": "Comprensión del contexto"}


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


def show(s, session_id: int, rater_id: int, after_save: bool = False) -> tuple:
    """The rater's next item of the session, as the tab's item outputs (the caller commits `s`).
    `after_save`: `save`'s submit has just checked that this session is open and the rater's, and the aspect
    radios already show or hide as its rubric asks; so no membership query, and the radios get plain values
    instead of gr.update (Gradio builds a new component for every update: ~1 ms of CPU each, 15 radios per save)."""
    if not after_save and rater_session(s, session_id, rater_id) is None:
        raise EsllmError("No participa en esa sesión o ya está cerrada.")
    item = next_item(s, session_id, rater_id)
    if item is None:
        empty = [gr.update(value=None, visible=True)] * 3 + [gr.update(value=None, visible=False)] * 12
        return (None, "### ✅ Terminó todos sus ítems de esta sesión. ¡Gracias!", "", "", "",
                "", "", "", *empty)
    full = "exactitud" in item.criteria
    prev = item.previous
    gen = [str(prev[lb]["general"]) if prev.get(lb) else None for lb in LABELS]
    asp = [str(prev[lb][a]) if prev.get(lb, {}).get(a) else None for lb in LABELS for a in ASPECTS]
    if not after_save:
        gen = [gr.update(value=v) for v in gen]
        asp = [gr.update(visible=full, value=v) for v in asp]
    cat = item.category.replace("_", " ")
    return ((session_id, item.assignment_id, time.time()), f"**Ítem {item.position} / {item.total}** · {cat}",
            _context_html(item), f"### Instrucción\n\n{item.prompt}", prev.get("comentario", ""),
            *[verbatim_html(item.answers[lb]) for lb in LABELS], *gen, *asp)


# ---------------------------------------------------------------------------------------------- handlers
@handler("rater")
def start(ctx: AppContext, session_id: Any, request: gr.Request, *, caller: Optional[Caller] = None) -> tuple:
    """«Comenzar / continuar» (/evaluar_abrir): the rater's next item of the session."""
    if not isinstance(session_id, int):
        raise EsllmError("Elija una sesión.")
    with ctx.transaction() as s:  # the next item is marked started
        return show(s, session_id, caller.id)


@handler("rater")
def save(ctx: AppContext, st: Any, comment_text: Any, g_a, g_b, g_c, ex_a, re_a, co_a, cm_a, ex_b, re_b, co_b, cm_b,
         ex_c, re_c, co_c, cm_c, request: gr.Request, *, caller: Optional[Caller] = None) -> tuple:
    """«Guardar y seguir» (/evaluar_guardar): save the item's scores, then show the next item."""
    # Explicit parameters: Gradio injects `request` only into a named, annotated parameter.
    values = (g_a, g_b, g_c, ex_a, re_a, co_a, cm_a, ex_b, re_b, co_b, cm_b, ex_c, re_c, co_c, cm_c)
    if not st:
        raise EsllmError("No hay ningún ítem abierto: pulse «Comenzar / continuar».")
    session_id, assignment_id, shown_at = st
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
        return show(s, session_id, caller.id, after_save=asg.session_id == session_id)


def load_evaluar(ctx: AppContext, request: gr.Request):
    """Page load: the rater's open sessions (never raises; other callers get an empty list and a notice)."""
    c = ctx.caller(request)
    if c is None or c.role != "rater" or ctx.sessionmaker is None:
        return gr.update(choices=[], value=None), "Esta pestaña es para evaluadores con cuenta."
    with ctx.sessionmaker() as s:
        opts = [(r.name, r.id) for r in rater_sessions(s, c.id)]
    return (gr.update(choices=opts, value=opts[0][1] if opts else None),
            f"Evaluador: **{c.name}** · {len(opts)} sesión(es) abierta(s)")


# ---------------------------------------------------------------------------------------------- layout
def build_evaluar(ctx: AppContext):
    """Build the tab; returns (load function, outputs). The session list is filled on load, per rater."""
    with gr.Tab("Evaluar", id="evaluar"):
        who = gr.Markdown("", elem_id="evaluador")
        with gr.Row():
            # Choices are filled per rater on load; the handler checks membership, so any value may be sent.
            session = gr.Dropdown([], value=None, label="Sesión de calificación", elem_id="sesion", scale=3,
                                  allow_custom_value=True)
            start_btn = gr.Button("Comenzar / continuar", variant="primary", elem_id="comenzar", scale=1)
        state = gr.State(None)  # server-side: (session id, assignment id, time shown)
        progress = gr.Markdown("", elem_id="progreso")
        # gr.HTML, not gr.Markdown: the stored answers must reach the rater unchanged (esllm/ui/verbatim.py)
        context = gr.HTML("", elem_id="contexto", js_on_load=None)
        prompt = gr.Markdown("", elem_id="prompt")
        cols: dict[str, dict[str, Any]] = {}
        with gr.Row():
            for label in LABELS:
                with gr.Column():
                    ans = gr.HTML("", label=f"Modelo {label}", elem_id=f"respuesta-{label}", container=True,
                                  show_label=True, padding=True, js_on_load=None)
                    general = gr.Radio(SCORES, value=None, label=f"Nota de {label} (1-5)", elem_id=f"nota-{label}")
                    aspects = [gr.Radio(SCORES, value=None, label=f"{ASPECT_LABELS[a]} ({label})", visible=False,
                                        elem_id=f"{a}-{label}") for a in ASPECTS]
                    cols[label] = {"answer": ans, "general": general, "aspects": aspects}
        comment = gr.Textbox(label="Comentario (opcional)", lines=2, max_lines=6, elem_id="comentario")
        save_btn = gr.Button("Guardar y seguir", variant="primary", elem_id="guardar")
        with gr.Accordion("Rúbrica", open=True):
            gr.Markdown(RUBRIC)

        answer_outs = [cols[label]["answer"] for label in LABELS]
        general_outs = [cols[label]["general"] for label in LABELS]
        aspect_outs = [r for label in LABELS for r in cols[label]["aspects"]]
        item_outs = [state, progress, context, prompt, comment, *answer_outs, *general_outs, *aspect_outs]

        start_btn.click(bind(ctx, start), session, item_outs, api_name="evaluar_abrir")
        save_btn.click(bind(ctx, save), [state, comment, *general_outs, *aspect_outs], item_outs,
                       api_name="evaluar_guardar", concurrency_limit=None)
    return bind(ctx, load_evaluar), [session, who]
