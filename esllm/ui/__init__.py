"""Gradio UI: one module per tab, each with a `build_<tab>(ctx)` function. No torch imports here."""

from __future__ import annotations

import gradio as gr

from esllm.ui.chat import build_conversar
from esllm.ui.context import AppContext

CSS = """
#chat { font-size: 15px; }
footer { display: none !important; }
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="esllm — banco de trabajo de LLM en español") as demo:
        gr.Markdown("## esllm · banco de trabajo de modelos de lenguaje en español")
        with gr.Tabs():
            build_conversar(ctx)
    demo.queue(default_concurrency_limit=16)
    return demo
