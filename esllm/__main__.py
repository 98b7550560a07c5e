"""Command line: `python -m esllm COMMAND`.

    python -m esllm check-config configs/default.yaml   # validate a contestants file
    python -m esllm adapters [--config C]               # list adapter folders and why any is unusable
                                                        # (static checks; shape checks need the app)
    python -m esllm train RECIPE.yaml [key=value ...] [--resume]   # train a LoRA adapter
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esllm import EsllmError

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m esllm", description="esllm command line")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-config", help="validate a contestants YAML file")
    c.add_argument("config", nargs="?", default=None)
    a = sub.add_parser("adapters", help="list adapter folders and their problems")
    a.add_argument("--config", default=None)
    t = sub.add_parser("train", help="train a LoRA adapter from a recipe (see configs/recipes/)")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.epochs=1 lora.r=8")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = p.parse_args(argv)
    if args.cmd == "train":
        return _train(args)
    from esllm.config import load_config

    try:
        cfg = load_config(args.config)
    except EsllmError as e:
        print(e, file=sys.stderr)
        return 2
    if args.cmd == "check-config":
        print(f"OK: {len(cfg.models)} modelo(s), {len(cfg.contestants)} concursante(s)")
        for ct in cfg.contestants:
            print(f"  - {ct.name}: {ct.model}" + (f" + {ct.adapter}" if ct.adapter else "") + f" [{ct.preset}]")
        return 0
    from esllm.engine.adapters import scan_dir

    infos = scan_dir(cfg.resolve_adapters_dir(ROOT))
    if not infos:
        print(f"No hay carpetas de adaptador en {cfg.resolve_adapters_dir(ROOT)}")
    for info in infos:
        state = "ok" if info.ok else f"ERROR: {info.reason}"
        print(f"{info.name}: {state}" + (f" (r={info.r}, base={info.base_hint})" if info.ok else ""))
    return 0 if all(i.ok for i in infos) else 1


def _train(args) -> int:
    import logging

    from esllm.train.recipe import load_recipe

    logging.basicConfig(level=logging.WARNING)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        from esllm.train.trainer import train

        result = train(recipe, root=ROOT, resume=args.resume)
    except EsllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
