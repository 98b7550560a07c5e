"""Gradio UI: one module per tab. Each has module-level handlers `fn(ctx, *inputs, request)` declared with
`@handler(role)` (esllm/ui/context.py: the one permission and error path; writes in `ctx.transaction()`), a
page-load function `load_<tab>(ctx, request)`, and a `build_<tab>(ctx)` that only lays out the components and
wires the events with `bind(ctx, fn)`. See docs/ARCHITECTURE.md. No torch imports here."""

from __future__ import annotations

import gradio as gr

from esllm.ui.administrar import build_administrar
from esllm.ui.comparar import build_comparar
from esllm.ui.context import AppContext
from esllm.ui.conversar import build_conversar
from esllm.ui.evaluar import SHORTCUTS_JS, build_evaluar
from esllm.ui.resultados import build_resultados

# The tabs in page order; each builder returns (load function, its outputs), run when a page opens.
TABS = (build_conversar, build_comparar, build_evaluar, build_administrar, build_resultados)

HEAD = SHORTCUTS_JS
CSS = """
#chat { font-size: 15px; }
footer { display: none !important; }
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="esllm — banco de trabajo de LLM en español") as demo:
        gr.Markdown("## esllm · banco de trabajo de modelos de lenguaje en español")
        with gr.Tabs():
            loaders = [build(ctx) for build in TABS]
        for fn, outputs in loaders:
            demo.load(fn, None, outputs, api_name=False)
    demo.queue(default_concurrency_limit=16)
    return demo
