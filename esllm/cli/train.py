"""`train RECIPE.yaml [key=value …] [--resume]`: train a LoRA adapter (esllm/train/)."""

from __future__ import annotations

from esllm.paths import ROOT


def register(sub) -> None:
    t = sub.add_parser("train", help="train a LoRA adapter from a recipe (see configs/recipes/)")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.epochs=1 lora.r=8")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import logging

    from esllm.train.recipe import load_recipe
    from esllm.train.trainer import train

    logging.basicConfig(level=logging.WARNING)
    result = train(load_recipe(args.recipe, args.overrides), root=ROOT, resume=args.resume)
    return 130 if result.interrupted else 0  # Ctrl-C left a checkpoint: the shell's "interrupted" code
