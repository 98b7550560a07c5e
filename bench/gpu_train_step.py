"""QLoRA steps of the study's 7B recipe on a Mistral-7B-shaped model with random weights (CUDA only).

    PYTHONPATH=. python bench/gpu_train_step.py [--steps 3] [--workdir /tmp/esllm-gpu]

Builds the model from Mistral-7B's config (nothing is downloaded; bench/gpu7b.py), then runs
`esllm.train.trainer.train` with configs/recipes/estudio-7b-qlora.yaml unchanged except for the
model folder, the template (mistral), the output folder and max_steps: NF4 + double quant + bf16
compute, r=256/alpha=256/dropout 0.2 on q,k,v,o, paged AdamW 8-bit, gradient checkpointing,
batch 4 x grad_accum 4, max_seq_len 1024. Prints seconds per optimizer step and peak GPU memory.
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/esllm-gpu")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("needs CUDA")
    from bench.gpu7b import MISTRAL_7B, build_random_mistral
    from esllm.train.recipe import load_recipe
    from esllm.train.trainer import train

    work = Path(args.workdir)
    folder = work / "mistral-7b-random"
    t0 = time.perf_counter()
    build_random_mistral(folder, MISTRAL_7B, "cuda")
    print(f"random Mistral-7B folder ready in {time.perf_counter() - t0:.0f} s", flush=True)
    out = work / "adapter-qlora"
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    recipe = load_recipe(ROOT / "configs" / "recipes" / "estudio-7b-qlora.yaml", [
        f"model.source={folder}", "output.template=mistral", f"output.dir={out}", f"training.max_steps={args.steps}",
        f"training.eval_every={args.steps}"])
    print(f"recipe: {json.loads(recipe.model_dump_json())}", flush=True)
    torch.cuda.reset_peak_memory_stats()
    res = train(recipe, root=ROOT, progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(log, log[1:])]
    print(f"\nsteps: {res.steps}; per-step elapsed (s, step 2..): {[round(t, 2) for t in times]}")
    print(f"losses: {[r['loss'] for r in log]}; eval: {res.final_eval_loss:.4f}")
    print(f"peak GPU memory (max_memory_allocated): {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB; "
          f"reserved {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB; {torch.cuda.get_device_name()}")
    meta = json.loads((out / "esllm_adapter.json").read_text())
    print(f"adapter written: {sorted(p.name for p in out.iterdir())}, optimizer={meta['optimizer']}, "
          f"examples used {meta['examples_used']} dropped {meta['examples_dropped']}")


if __name__ == "__main__":
    main()
