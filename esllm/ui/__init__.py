"""Gradio UI: one module per tab, each with a `build_<tab>(ctx)` function. No torch imports here."""

from __future__ import annotations

import gradio as gr

from esllm.ui.administrar import build_administrar
from esllm.ui.chat import build_conversar
from esllm.ui.context import AppContext
from esllm.ui.evaluar import SHORTCUTS_JS, build_evaluar

HEAD = SHORTCUTS_JS
CSS = """
#chat { font-size: 15px; }
footer { display: none !important; }
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="esllm — banco de trabajo de LLM en español") as demo:
        gr.Markdown("## esllm · banco de trabajo de modelos de lenguaje en español")
        with gr.Tabs():
            loaders = [build_conversar(ctx), build_evaluar(ctx), build_administrar(ctx)]
        for fn, outputs in loaders:
            demo.load(fn, None, outputs, api_name=False)
    demo.queue(default_concurrency_limit=16)
    return demo
