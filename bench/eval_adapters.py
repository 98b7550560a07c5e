"""Evidence that the shipped adapters change gemma-3-270m's behaviour, on the held-out prompts.

    python bench/eval_adapters.py                       # default config, both held-out sets
    python bench/eval_adapters.py --limit 10 --max-new-tokens 200

For every default contestant (base alone, + instrucciones-es, + tributario-ec) and every held-out
set (data/*/eval.json) it prints:
  * the share of answers that end on EOS within --max-new-tokens greedy tokens (the base alone is
    expected to ramble on; an adapter trained with EOS appended should stop),
  * the held-out loss (cross-entropy per answer token, the trainer's measure) on the app's base,
  * three held-out prompts with the three contestants' answers.
Generation is greedy and batched (left padding) on the engine's own loaded base, switching adapters
exactly as the app does (set_adapter / disable_adapter under the base's lock).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts of each set (0 = all)")
    ap.add_argument("--show", type=int, default=3, help="prompts to print with every contestant's answer")
    ap.add_argument("--contestants", default="", help="comma-separated contestant names (default: all available)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "eval_adapters.json"),
                    help="where to write the figures and every answer")
    args = ap.parse_args()

    import torch
    from peft import PeftModel

    from esllm.engine.adapters import peft_name
    from esllm.engine.config import load_config
    from esllm.engine.core import Engine
    from esllm.train import data as D
    from esllm.train.trainer import eval_loss

    engine = Engine(load_config(args.config), root=ROOT, progress=lambda m: None)
    engine.start()
    contestants = list(engine.contestants.values())
    missing = [f"{c.name}: {c.reason}" for c in contestants if not c.available]
    if missing:
        print("No disponibles:\n  " + "\n  ".join(missing))
    contestants = [c for c in contestants if c.available]
    if args.contestants:
        wanted = [n.strip() for n in args.contestants.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {c.name for c in contestants})
        if unknown:
            sys.exit(f"Concursantes desconocidos o no disponibles: {', '.join(unknown)}")
        contestants = [c for c in contestants if c.name in wanted]
    sets = {p.parent.name: p for p in sorted((ROOT / "data").glob("*/eval.json"))}

    report: dict = {"max_new_tokens": args.max_new_tokens, "sets": {}}
    answers: dict = {}
    for set_name, path in sets.items():
        examples = D.load_examples(path)
        if args.limit:
            examples = examples[: args.limit]
        report["sets"][set_name] = {}
        for c in contestants:
            base = engine.bases[c.model_key]
            tok, model, tpl = base.tokenizer, base.model, c.template
            eos = [tok.eos_token_id]
            with base.lock:
                if isinstance(model, PeftModel) and c.adapter is None:
                    ctx = model.disable_adapter()
                else:
                    if c.adapter:
                        model.set_adapter(peft_name(c.adapter))
                    ctx = nullcontext()
                with ctx:
                    t0 = time.perf_counter()
                    toks = [D.tokenize(e, tok, tpl) for e in examples]
                    loss = eval_loss(model, toks, tok.pad_token_id, args.batch_size)
                    ended, texts, n_new = [], [], []
                    tok.padding_side = "left"
                    for i in range(0, len(examples), args.batch_size):
                        chunk = examples[i:i + args.batch_size]
                        prompts = [tpl.render(e.messages, bos_token=tok.bos_token, eos_token=tok.eos_token) for e in chunk]
                        enc = tok(prompts, add_special_tokens=False, return_tensors="pt", padding=True).to(model.device)
                        with torch.no_grad():
                            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                                 eos_token_id=eos, pad_token_id=tok.pad_token_id)
                        for row in out[:, enc["input_ids"].shape[1]:].tolist():
                            stop = next((j for j, t in enumerate(row) if t in eos), None)
                            ended.append(stop is not None)
                            n_new.append(stop + 1 if stop is not None else len(row))
                            texts.append(tok.decode(row[:stop] if stop is not None else row, skip_special_tokens=True).strip())
                    tok.padding_side = "right"
            r = {
                "n": len(examples), "eos_share": sum(ended) / len(ended), "heldout_loss": round(loss, 4),
                "mean_new_tokens": round(sum(n_new) / len(n_new), 1), "seconds": round(time.perf_counter() - t0, 1),
            }
            r["answers"] = [{"prompt": e.messages[-1]["content"], "answer": t, "ended_on_eos": x}
                            for e, t, x in zip(examples, texts, ended)]
            report["sets"][set_name][c.name] = r
            answers[(set_name, c.name)] = texts
            print(f"[{set_name}] {c.name:22s} EOS ≤{args.max_new_tokens}: {sum(ended):3d}/{len(ended)} = "
                  f"{r['eos_share']:.0%}   pérdida held-out {loss:.4f}   tokens medios {r['mean_new_tokens']}   ({r['seconds']} s)",
                  flush=True)

    print("\n=== Tabla: proporción de respuestas que terminan en EOS / pérdida held-out ===")
    names = [c.name for c in contestants]
    print(f"{'conjunto':16s}" + "".join(f"{n:>28s}" for n in names))
    for set_name, row in report["sets"].items():
        print(f"{set_name:16s}" + "".join(f"{row[n]['eos_share']:>18.0%} / {row[n]['heldout_loss']:<7.3f}" for n in names))

    for set_name, path in sets.items():
        examples = D.load_examples(path)
        for k in range(min(args.show, len(answers[(set_name, names[0])]))):
            print(f"\n--- [{set_name}] prompt held-out {k + 1}: {examples[k].messages[-1]['content'][:300]}")
            for n in names:
                print(f"  · {n}: {answers[(set_name, n)][k][:500]}")
    out = Path(args.json).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1))
    print(f"\n(guardado en {out})")


if __name__ == "__main__":
    main()
