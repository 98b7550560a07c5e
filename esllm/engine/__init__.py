"""Model engine: base models loaded once, LoRA adapters hot-swapped, streaming generation.

Imports nothing: importing this package loads no model and no heavy library (the engine is
`esllm.engine.core.Engine`).
"""
