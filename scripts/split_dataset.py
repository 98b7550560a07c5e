"""Merge a dataset's source files and hold out 10% for evaluation (seeded, so it can be redone).

    python scripts/split_dataset.py data/tributario-ec/todo.json
    python scripts/split_dataset.py data/instrucciones-es/p1_*.json data/instrucciones-es/p2_*.json \
        --merged data/instrucciones-es/todo.json

Writes train.json and eval.json beside the first input (Alpaca JSON objects with a "data" list that
keep the header — name, description, notice, licence — of the first input that has one).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("inputs", nargs="+", type=Path)
    p.add_argument("--merged", type=Path, help="also write the merged, deduplicated set here")
    p.add_argument("--eval-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    header: dict = {}
    items, seen = [], set()
    for f in a.inputs:
        obj = json.loads(f.read_text(encoding="utf-8"))
        if isinstance(obj, dict):
            if not header:
                header = {k: v for k, v in obj.items() if k != "data"}
            obj = obj["data"]
        for it in obj:
            key = " ".join(it["instruction"].lower().split()) + "\x00" + " ".join(it.get("input", "").lower().split())
            if key not in seen:
                seen.add(key)
                items.append(it)
    out_dir = a.inputs[0].parent
    if a.merged:
        a.merged.write_text(json.dumps({**header, "data": items}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    idx = list(range(len(items)))
    random.Random(a.seed).shuffle(idx)
    n_eval = round(len(items) * a.eval_fraction)
    parts = {"eval": sorted(idx[:n_eval]), "train": sorted(idx[n_eval:])}
    for name, ids in parts.items():
        obj = {**header, "split": f"{name} (seed {a.seed}, {a.eval_fraction:.0%} held out)", "data": [items[i] for i in ids]}
        (out_dir / f"{name}.json").write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(items)} ejemplos: {len(parts['train'])} train, {len(parts['eval'])} eval -> {out_dir}")


if __name__ == "__main__":
    main()
