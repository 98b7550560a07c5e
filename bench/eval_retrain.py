"""Held-out figures of adapter folders against the base, without the app's engine (plain transformers + peft).

    python bench/eval_retrain.py --set instrucciones-es --adapter nuevo=/tmp/x/instrucciones-es \
        --adapter shipped=adapters/instrucciones-es --out bench/results/retrain_cpu.json

For the base alone and for every adapter, on the held-out prompts of `data/<set>/eval.json`:
  * held-out loss: cross-entropy per answer token (EOS included), the trainer's measure (esllm.train.loss.eval_loss),
  * the share of greedy answers that end on EOS within --max-new-tokens tokens (batched, left padding),
  * mean new tokens.
The base is loaded once (bundled gemma-3-270m, `--quantization none` = float32 as the trainer uses on CPU, or
nf4 as in the app); adapters are switched with set_adapter / disable_adapter. Prompts are rendered with each adapter's
template (alpaca-es for the shipped ones) exactly as the app renders them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", required=True, help="data/<set>/eval.json")
    ap.add_argument("--adapter", action="append", default=[], help="name=folder (repeatable)")
    ap.add_argument("--no-base-generation", action="store_true", help="base: loss only (it never stops on its own)")
    ap.add_argument("--quantization", default="none", choices=["none", "nf4"])
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=17)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    import torch
    from peft import PeftModel

    from esllm.engine.config import ModelSpec
    from esllm.engine.loader import load_base
    from esllm.engine.templates import get_template
    from esllm.train import data as D
    from esllm.train.loss import eval_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    examples = D.load_examples(ROOT / "data" / args.set / "eval.json")
    if args.limit:
        examples = examples[: args.limit]
    base = load_base("base", ModelSpec(source="bundled:gemma-3-270m", quantization=args.quantization, device="cpu"),
                     lambda m: None)
    tok, model = base.tokenizer, base.model
    if args.quantization == "none":
        model = model.float()  # bf16 matmuls are emulated (slow) on CPUs without AVX512-BF16/AMX
    adapters = [a.split("=", 1) for a in args.adapter]
    for i, (name, folder) in enumerate(adapters):
        if i == 0:
            model = PeftModel.from_pretrained(model, folder, adapter_name=name)
        else:
            model.load_adapter(folder, adapter_name=name)
    model.eval()
    tpl = get_template("alpaca-es")
    eos = [tok.eos_token_id]
    report = {"set": args.set, "n": len(examples), "quantization": args.quantization,
              "max_new_tokens": args.max_new_tokens, "rows": {}}
    for name in ["base"] + [n for n, _ in adapters]:
        t0 = time.perf_counter()
        if name == "base" and isinstance(model, PeftModel):
            ctx = model.disable_adapter()
        else:
            if name != "base":
                model.set_adapter(name)
            from contextlib import nullcontext

            ctx = nullcontext()
        with ctx:
            toks = [D.tokenize(e, tok, tpl) for e in examples]
            loss = eval_loss(model, toks, tok.pad_token_id, 8)
            row = {"heldout_loss": round(loss, 4)}
            if not (name == "base" and args.no_base_generation):
                ended, n_new, texts = [], [], []
                tok.padding_side = "left"
                for i in range(0, len(examples), args.batch_size):
                    chunk = examples[i:i + args.batch_size]
                    prompts = [tpl.render(e.messages, bos_token=tok.bos_token, eos_token=tok.eos_token) for e in chunk]
                    enc = tok(prompts, add_special_tokens=False, return_tensors="pt", padding=True)
                    with torch.no_grad():
                        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                             eos_token_id=eos, pad_token_id=tok.pad_token_id)
                    for r in out[:, enc["input_ids"].shape[1]:].tolist():
                        stop = next((j for j, t in enumerate(r) if t in eos), None)
                        ended.append(stop is not None)
                        n_new.append(stop + 1 if stop is not None else len(r))
                        texts.append(tok.decode(r[:stop] if stop is not None else r, skip_special_tokens=True).strip())
                tok.padding_side = "right"
                row.update(eos_share=round(sum(ended) / len(ended), 4), eos_n=sum(ended),
                           mean_new_tokens=round(sum(n_new) / len(n_new), 1),
                           answers=[{"prompt": e.messages[-1]["content"], "answer": t, "eos": x}
                                    for e, t, x in zip(examples, texts, ended)])
        row["seconds"] = round(time.perf_counter() - t0, 1)
        report["rows"][name] = row
        eos_txt = f"EOS ≤{args.max_new_tokens}: {row['eos_n']}/{len(examples)} = {row['eos_share']:.0%}  tokens medios {row['mean_new_tokens']}" \
            if "eos_share" in row else "EOS: (no generado)"
        print(f"[{args.set}] {name:28s} pérdida held-out {loss:.4f}   {eos_txt}   ({row['seconds']} s)", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
