"""esllm: a Spanish-language LLM workbench (chat, blind rating, QLoRA adapters).

Layers (see ../shared/DESIGN.md §2): `esllm.engine` loads base models and hot-swaps LoRA
adapters; `esllm.ui` builds the Gradio tabs; `app.py` launches the app.
Nothing is loaded at import time.
"""

__version__ = "0.1.0"


class EsllmError(Exception):
    """An error whose message is meant for the user (Spanish, says what to do)."""
