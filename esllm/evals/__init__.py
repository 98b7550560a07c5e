"""Automatic evaluations: Belebele-format benchmark, judge model, reading-comprehension questions,
pictograms to sentence. Each is an `Evaluation` (esllm/evals/base.py: load the items, run one contestant,
summarise) and each run is stored as an `eval_run` row (esllm/evals/runs.py); their commands are in
esllm/cli/evals.py."""
