"""Automatic evaluations (DESIGN.md §9): Belebele-format benchmark, judge model, reading-comprehension
questions, pictograms to sentence. Each run is stored as an `eval_run` row (esllm/evals/runs.py)."""
