"""esllm: a Spanish-language LLM workbench (chat, blind rating studies, automatic evaluations, LoRA training).

Packages, lowest layer first (docs/ARCHITECTURE.md draws them and follows a chat message, a rating and a
training job through them): `esllm.store` (database), `esllm.engine` (contestants config, base models,
adapters, generation), `esllm.train` (LoRA/QLoRA), `esllm.study` (the blind rating study), `esllm.evals`
(Belebele, judge, questions, pictograms), and the two front ends `esllm.ui` (Gradio tabs) and `esllm.cli`
(`python -m esllm`). `esllm.paths` says where things live. Nothing is loaded at import time.
"""

__version__ = "0.1.0"


class EsllmError(Exception):
    """An error whose message is meant for the user (Spanish, says what to do)."""
