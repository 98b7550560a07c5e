"""LoRA / QLoRA training: recipes (recipe.py), data (data.py), the loop (trainer.py), outputs (output.py)."""
