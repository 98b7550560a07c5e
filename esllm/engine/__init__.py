"""Model engine: base models loaded once, LoRA adapters hot-swapped, streaming generation.

Imports torch lazily: importing this package loads no model and no heavy library.
"""

from esllm.engine.core import Engine
from esllm.engine.types import GenerationResult, LoadedContestant, RefreshReport, StreamEvent

__all__ = ["LoadedContestant", "Engine", "GenerationResult", "RefreshReport", "StreamEvent"]
