"""Model engine: base models loaded once, LoRA adapters hot-swapped, contestants that answer (esllm/engine/core.py's
`Engine`; docs/ARCHITECTURE.md draws the modules). Importing it loads no model and no heavy library."""
