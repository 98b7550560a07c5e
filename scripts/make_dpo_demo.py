"""Build data/preferencias/dpo-demo.jsonl: a small preference set from this project's own instructions.

    python scripts/make_dpo_demo.py            # 96 pairs from data/instrucciones-es/train.json (seed 7)

The shipped instruction adapter's failure is not its content but its ending: it runs on (repeats itself, or
writes a new «### Instrucción:» turn) instead of stopping. Each pair keeps the written answer as `chosen`
and, as `rejected`, the same answer followed by that failure — a repetition of itself, or a made-up next
turn with another item's instruction and the start of its answer. Only training items are used; the held-out
prompts (data/instrucciones-es/eval.json) stay unseen for measuring the effect (bench/results/).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "data" / "instrucciones-es" / "train.json"
OUT = ROOT / "data" / "preferencias" / "dpo-demo.jsonl"
N = 96


def main() -> None:
    items = json.loads(SRC.read_text(encoding="utf-8"))
    items = items["data"] if isinstance(items, dict) else items
    rng = random.Random(7)
    picked = rng.sample(range(len(items)), N)
    rows = []
    for n, i in enumerate(picked):
        it = items[i]
        user = it["instruction"].strip() + (f"\n\n{it['input'].strip()}" if (it.get("input") or "").strip() else "")
        answer = it["output"].strip()
        if n % 2 == 0:
            rejected, kind = f"{answer}\n\n{answer}", "repite"
        else:
            other = items[rng.choice([j for j in range(len(items)) if j != i])]
            cut = other["output"].strip()[:160].rsplit(" ", 1)[0]
            rejected, kind = f"{answer}\n\n### Instrucción:\n{other['instruction'].strip()}\n\n### Respuesta:\n{cut}", "sigue"
        rows.append({"prompt": [{"role": "user", "content": user}], "chosen": [{"role": "assistant", "content": answer}],
                     "rejected": [{"role": "assistant", "content": rejected}], "item": f"train-{i}", "fallo": kind})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} pares en {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
