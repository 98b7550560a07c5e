"""`train RECIPE.yaml [key=value …] [--resume]`: train a LoRA adapter (esllm/train/).

`method: sft` (default) trains on instructions; `method: dpo | kto` on preferences, from an export file
(`data.path`), a rating session (`data.session`, DPO) or the chat 👍/👎 (`data.feedback: true`, KTO) read
from the store ($ESLLM_DATABASE_URL): those records are written to `<output.dir>/datos_preferencia.jsonl` (they
travel with the adapter) and the session and ratings they came from are named in its metadata.
"""

from __future__ import annotations

from pathlib import Path

from esllm.paths import ROOT


def register(sub) -> None:
    t = sub.add_parser("train", help="train a LoRA adapter from a recipe (sft, dpo or kto; see configs/recipes/)")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.epochs=1 lora.r=8 data.session=piloto")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.set_defaults(func=cmd_train)


def store_data(recipe, root: Path) -> tuple[Path, dict]:
    """Write the store's preference records into the output folder; (file, provenance)."""
    from esllm.cli.common import open_store
    from esllm.study import preferences

    factory = open_store()
    with factory() as s:
        if recipe.data.session:
            records, prov = preferences.session_pairs(s, recipe.data.session, recipe.data.min_gap)
        else:
            records, prov = preferences.feedback_records(s)
    out = Path(recipe.output.dir)
    out = out if out.is_absolute() else root / out
    return preferences.write_records(records, out / "datos_preferencia.jsonl"), prov


def run(recipe, *, root: Path = ROOT, resume: bool = False, **kw):
    if recipe.method == "sft":
        from esllm.train.trainer import train

        return train(recipe, root=root, resume=resume, **kw)
    from esllm.train.pref import train_preference

    data_file, prov = (None, None)
    if recipe.data.session or recipe.data.feedback:
        data_file, prov = store_data(recipe, root)
    return train_preference(recipe, root=root, resume=resume, data_file=data_file, provenance=prov, **kw)


def cmd_train(args) -> int:
    import logging

    from esllm.train.recipe import load_recipe

    logging.basicConfig(level=logging.WARNING)
    result = run(load_recipe(args.recipe, args.overrides), root=ROOT, resume=args.resume)
    return 130 if result.interrupted else 0  # Ctrl-C left a checkpoint: the shell's "interrupted" code
