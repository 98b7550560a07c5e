"""Gradio UI: one module per tab. Each has module-level handlers `fn(ctx, *inputs, request)` declared with
`@handler(role)` (esllm/ui/context.py: the one permission and error path; writes in `ctx.transaction()`), a
page-load function `load_<tab>(ctx, request)`, and a `build_<tab>(ctx)` that only lays out the components and
wires the events with `bind(ctx, fn)`. See docs/ARCHITECTURE.md. No torch imports here.

The page is shaped by role when it loads (`load_page`): every tab starts hidden; an admin gets «Conversar»,
«Comparar», «Administrar» and «Resultados» and lands on «Conversar»; a rater gets «Evaluar» alone. The header
names the user and, with accounts, has «Salir» (log out: Gradio's GET /logout). Hiding is not the check: every
handler checks the caller's role on the server.
"""

from __future__ import annotations

import gradio as gr

from esllm.ui.administrar import build_administrar
from esllm.ui.comparar import build_comparar
from esllm.ui.context import AppContext, bind
from esllm.ui.conversar import build_conversar
from esllm.ui.evaluar import SHORTCUTS_JS, build_evaluar
from esllm.ui.resultados import build_resultados
from esllm.ui.uploads import CACHE_SWEEP

# The tabs in page order; each builder returns (load function, its outputs), run when a page opens.
TABS = (build_conversar, build_comparar, build_evaluar, build_administrar, build_resultados)
# Which tabs each role sees, and the one it lands on (the first).
ROLE_TABS = {"admin": ("conversar", "comparar", "administrar", "resultados"), "rater": ("evaluar",)}
ROLE_NAMES = {"admin": "administrador", "rater": "evaluador"}

HEAD = SHORTCUTS_JS  # Gradio's own words are asked in Spanish by esllm/ui/login.py (it must run earlier than this)
CSS = """
#chat { font-size: 15px; }
footer { display: none !important; }
/* A failed event is said once, in its message area or the error toast: never as an «Error» badge painted over
   the event's outputs (that overlay also swallowed clicks on the radios under it). */
.wrap:has(> .error), .wrap:has(> .clear-status) { display: none !important; }
.esllm-mensaje *, .esllm-falta * { color: #b91c1c !important; }
.esllm-falta p { font-weight: 600; }
.esllm-titulo { margin: 0 0 0.2em 0; font-size: var(--text-lg); }
/* An empty table says so (Gradio draws a bare header, or «1 2 3» for a table without headers yet). */
[role="grid"]:not(:has(tbody tr))::after { content: "Sin datos todavía."; display: block; padding: 0.7em 1em;
  color: var(--body-text-color-subdued); font-style: italic; }
[role="grid"]:not(:has(tbody tr)) thead:has(th[title="1"]) { display: none; }
#cabecera { align-items: center; }
#salir { max-width: 12em; }
.esllm-turno-meta { color: var(--body-text-color-subdued); font-size: var(--text-sm); }
"""


def load_page(ctx: AppContext, ids: list[str], request: gr.Request):
    """Page load (never raises): (header, the tabs `ids` shown or hidden, the tab to land on) for the caller's
    role; a caller without a role sees no tab."""
    c = ctx.caller(request)
    shown = ROLE_TABS.get(c.role, ()) if c is not None else ()
    if c is None:
        header = "Inicie sesión para usar esllm."
    elif ctx.local_mode:
        header = "Modo local: usted es administrador."
    else:
        header = f"Sesión iniciada como **{c.name}** ({ROLE_NAMES.get(c.role, c.role)})."
    return (header, *[gr.update(visible=tab_id in shown) for tab_id in ids],
            gr.Tabs(selected=shown[0]) if shown else gr.skip())


def build_app(ctx: AppContext) -> gr.Blocks:
    # delete_cache: Gradio deletes the uploads it stored (esllm/ui/uploads.py) every hour once an hour old
    with gr.Blocks(title="esllm — banco de trabajo de LLM en español", delete_cache=CACHE_SWEEP) as demo:
        with gr.Row(elem_id="cabecera"):
            gr.Markdown("## esllm · banco de trabajo de modelos de lenguaje en español")
            header = gr.Markdown("", elem_id="usuario")
            logout = gr.Button("Salir", size="sm", elem_id="salir", visible=not ctx.local_mode)
        with gr.Tabs() as tabs:
            loaders = [build(ctx) for build in TABS]
        tab_blocks = [t for t in tabs.children if isinstance(t, gr.Tab)]
        for t in tab_blocks:
            t.visible = False  # until the page load says which tabs this caller gets
        demo.load(bind(ctx, load_page, [t.id for t in tab_blocks]), None, [header, *tab_blocks, tabs], api_name=False)
        for fn, outputs in loaders:
            demo.load(fn, None, outputs, api_name=False)
        # Gradio's GET /logout drops the login cookie and sends the browser back to the login page.
        logout.click(None, None, None, js="() => { window.location.href = new URL('logout', window.location.href); }")
        status = gr.Markdown("", elem_id="estado-eventos", visible=False)
    keep_outputs_on_error(demo, status)
    demo.queue(default_concurrency_limit=16)
    return demo


def keep_outputs_on_error(demo: gr.Blocks, status: gr.Markdown) -> None:
    """One place for a failed action's message, never its outputs: Gradio draws an event's status (the loading
    spinner, and on an error a red «Error» badge that hides the component's content) over every output unless
    `show_progress_on` says where. So every event reports on `status`, an empty block, and the error itself is
    the toast (the one message area); a long task with a progress bar (`progress=gr.Progress()`) shows it, and
    its errors, on its first output, its summary line. Events that chose `show_progress` themselves keep it."""
    import inspect

    for fn in demo.fns.values():
        if fn.fn is None or fn.show_progress == "hidden" or fn.show_progress_on:
            continue
        takes_progress = "progress" in inspect.signature(fn.fn).parameters
        fn.show_progress_on = [fn.outputs[0]] if takes_progress and fn.outputs else [status]
