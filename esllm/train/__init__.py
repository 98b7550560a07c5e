"""LoRA / QLoRA training: recipes (recipe.py), data (data.py), the loop (trainer.py) with its loss (loss.py) and
checkpoints (checkpoints.py), outputs (output.py)."""
