"""Belebele on the bundled gemma-3-270m: lm-evaluation-harness 0.4.13 itself against esllm's lm-eval mode (issue 30).

    PYTHONPATH=. python bench/belebele_lmeval_parity.py [--file data/belebele/muestra-es.jsonl] [--limit N] [--pre-0.4.4]
    # output committed as bench/results/belebele_lmeval_parity_cpu.txt

Three runs over the same items, all with the lm-eval template of lm-eval 0.4.13 ("Answer:"):
1. lm-eval's `hf` model on the bundled GGUF converted to safetensors (esllm/engine/bundled.py), float32, with a
   local task made from its installed belebele template (esllm/evals/lmeval_harness.py), offline;
2. esllm's `belebele --mode lm-eval` on the transformers backend, the same folder, float32;
3. esllm's lm-eval mode on llama.cpp with the Q4_K_M file as shipped.
Prints the letters 1 and 2 agree on and their max |Δ log-likelihood|, then 3's letters that differ from 2 (with
2's margin between its top two letters, to tell near ties) and the max |Δ|. With --pre-0.4.4, also esllm with the
pre-0.4.4 template (the full-width colon) against lm-eval 0.4.13, to show what one character does (one more fp32 run:
esllm's loglikelihood is one forward pass per choice, about 5x lm-eval's time here).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import header, no_progress_bars, quiet  # noqa: E402

MODEL = "gemma-3-270m"


def lmeval_mode(backend: str, items, file: Path, template: str = "lm-eval") -> dict[str, list[float]]:
    """esllm's lm-eval mode with the base alone on `backend` (transformers in float32): line -> log-likelihoods."""
    from esllm.engine.config import load_config
    from esllm.engine.core import Engine
    from esllm.evals.belebele import Belebele
    from esllm.paths import DEFAULT_CONFIG

    cfg = load_config(DEFAULT_CONFIG)
    spec = cfg.models[MODEL].model_copy(update={"backend": backend, "quantization": "none", "dtype": "float32",
                                                "device": "cpu"})
    base = next(c for c in cfg.contestants if c.model == MODEL and not c.adapter)
    cfg = cfg.model_copy(update={"models": {MODEL: spec}, "contestants": [base], "auto_contestants": False})
    engine = Engine(cfg, ROOT, progress=quiet)
    engine.start()
    t0 = time.perf_counter()
    out = Belebele(file, batch_size=8, mode="lm-eval", template=template).evaluate(engine, base.name, items)
    print(f"  esllm {backend} ({template}): {time.perf_counter() - t0:.0f} s, acc {out.metrics['acc']:.1%}, "
          f"ties {out.metrics['ties']}, dtype {engine.hashes(base.name).get('dtype', '(no informado)')}")
    return {d["line"]: [d["loglikelihoods"][L] for L in "ABCD"] for d in out.details}


def best(lls: list[float]) -> str:
    return "ABCD"[max(range(4), key=lambda i: (lls[i], -i))]


def compare(title: str, ref: dict[int, list[float]], got: dict[int, list[float]]) -> None:
    lines = sorted(ref)
    same = [ln for ln in lines if best(ref[ln]) == best(got[ln])]
    delta = max(abs(a - b) for ln in lines for a, b in zip(ref[ln], got[ln]))
    print(f"{title}: letters agree {len(same)}/{len(lines)}; max |Δ loglik| {delta:.2e}")
    for ln in lines:
        if ln not in same:
            top = sorted(ref[ln], reverse=True)
            print(f"    line {ln}: {best(ref[ln])} -> {best(got[ln])} (reference's top-two margin {top[0] - top[1]:.4f})")


def main() -> None:
    from esllm.engine.bundled import converted_dir
    from esllm.evals.belebele import SAMPLE, load_belebele
    from esllm.evals.lmeval_harness import run_lmeval

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", default=str(SAMPLE))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--pre-0.4.4", dest="pre", action="store_true", help="also the pre-0.4.4 template vs lm-eval")
    args = ap.parse_args()
    no_progress_bars()
    header("Belebele: lm-eval 0.4.13 vs esllm --mode lm-eval, bundled gemma-3-270m, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(args.file)
        if args.limit:
            file = Path(tmp) / "items.jsonl"
            file.write_text("".join(Path(args.file).read_text(encoding="utf-8").splitlines(True)[:args.limit]),
                            encoding="utf-8")
        items = load_belebele(file)
        model_dir, _ = converted_dir(MODEL, quiet)
        t0 = time.perf_counter()
        ref = run_lmeval(model_dir, file, Path(tmp) / "lmeval")
        print(f"  lm-eval {ref['version']} hf float32: {time.perf_counter() - t0:.0f} s, acc "
              f"{sum(r['acc'] for r in ref['rows']) / len(ref['rows']):.1%}")
        lm = {it.line: r["lls"] for it, r in zip(items, ref["rows"])}
        fp32 = lmeval_mode("transformers", items, file)
        q4 = lmeval_mode("llama.cpp", items, file)
        old = lmeval_mode("transformers", items, file, template="lm-eval-pre-0.4.4") if args.pre else None
    print(f"\n{len(items)} items of {args.file}")
    compare("esllm transformers fp32 vs lm-eval 0.4.13", lm, fp32)
    compare("esllm llama.cpp Q4_K_M vs esllm transformers fp32", fp32, q4)
    if old is not None:
        compare("esllm fp32 with the pre-0.4.4 template (Answer：) vs lm-eval 0.4.13", lm, old)


if __name__ == "__main__":
    main()
