"""Belebele scoring on a Mistral-7B-shaped model (random weights) through esllm's engine, on a CUDA GPU.

    PYTHONPATH=. python bench/gpu_belebele.py                # CUDA: 7B shape, nf4 as in the study
    PYTHONPATH=. python bench/gpu_belebele.py --tiny         # CPU check of this script on a tiny shape

The real Belebele Spanish split has 900 questions; the bundled sample (40, data/belebele/) is repeated
to --items questions. Scores base and base + one random LoRA (r=256 on q/k/v/o, the study's shape)
with `esllm.evals.belebele.evaluate`, the function the CLI and «Resultados» use: option-letter
likelihood, batched, the base's lock per batch. Prints questions/s, seconds per contestant and the
peak GPU memory. The weights are random, so the accuracy is chance (about 25%): this measures the
path and its speed, not a model.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import engine_config, quiet, write_random_lora  # noqa: E402
from bench.gpu7b import MISTRAL_7B, MISTRAL_TINY, build_random_mistral  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny shape on the CPU (checks the script)")
    ap.add_argument("--workdir", default="/tmp/esllm-gpu")
    ap.add_argument("--items", type=int, default=900, help="questions to score (the sample, repeated)")
    ap.add_argument("--batch-sizes", default="8,32", help="comma-separated batch sizes to time")
    ap.add_argument("--quant", default="nf4", choices=["nf4", "none"])
    args = ap.parse_args()

    import torch

    from esllm.engine.config import ModelSpec
    from esllm.engine.core import Engine
    from esllm.engine.loader import load_base
    from esllm.evals.belebele import evaluate, load_belebele

    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("needs CUDA (torch.cuda.is_available() is False); use --tiny for a CPU check")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (tiny shape)"
    print(f"Belebele scoring, Mistral-7B shape (random weights), {args.quant}, on {name}; torch {torch.__version__}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    folder = work / ("mistral-tiny-random" if args.tiny else "mistral-7b-random")
    build_random_mistral(folder, MISTRAL_TINY if args.tiny else MISTRAL_7B, device)

    sample = load_belebele(ROOT / "data" / "belebele" / "muestra-es.jsonl")
    items = (sample * (args.items // len(sample) + 1))[: args.items]
    key = "mistral-7b-random"
    spec = ModelSpec(source=str(folder), quantization=args.quant, device=device, template="mistral")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = load_base(key, spec, quiet)
    print(f"  base loaded in {base.load_seconds:.1f} s, footprint {base.footprint_bytes / 2**30:.2f} GiB")
    adir = work / "adapters-belebele"
    shutil.rmtree(adir, ignore_errors=True)
    n_lora = write_random_lora(base.model, adir / "lora256", r=256, targets=["q_proj", "k_proj", "v_proj", "o_proj"],
                               seed=5, base_name=str(folder))
    engine = Engine(engine_config(key, spec, ["lora256"], adir), root=work, loader=lambda *_, b=base: b, progress=quiet)
    engine.start()
    print(f"  random LoRA r=256 on q/k/v/o ({n_lora} modules) loaded; adapter errors: "
          f"{engine.adapter_errors or 'none'}")
    lens = [len(base.tokenizer(it.passage + it.question)["input_ids"]) for it in sample]
    print(f"  prompt length (passage + question, this tokenizer): {min(lens)}-{max(lens)} tokens")
    evaluate(engine, "base", items[:8], batch_size=8)  # warm-up (kernels, allocator)

    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for contestant in ("base", "base+lora256"):
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            out = evaluate(engine, contestant, items, batch_size=bs)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            m = out["metrics"]
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else "n/a"
            print(f"  batch {bs:>3}  {contestant:<14} {len(items)} questions in {dt:6.1f} s = "
                  f"{len(items) / dt:6.1f} q/s; peak GPU memory {peak}; accuracy {m['accuracy']:.1%} "
                  f"[{m['ci_low']:.1%}, {m['ci_high']:.1%}] (random weights: chance is 25%), "
                  f"letters {m['predicted_counts']}")
    del engine, base
    gc.collect()


if __name__ == "__main__":
    main()
