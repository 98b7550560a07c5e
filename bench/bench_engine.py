"""Engine benchmark: cold vs warm load, adapter switch vs base reload, tokens/s and memory (nf4 vs none).

Run from the repository root (CPU, the default model of configs/default.yaml):

    PYTHONPATH=. python bench/bench_engine.py                # ~10 min on 2 cores, cold conversion included
    PYTHONPATH=. python bench/bench_engine.py --skip-cold    # without the ~100 s GGUF conversion
    PYTHONPATH=. python bench/bench_engine.py --skip-cold --threads 1   # steadier on a machine others use
    PYTHONPATH=. python bench/bench_engine.py --switches 500 --reloads 3 --new-tokens 64 --gen-runs 3

GPU mode (CUDA): a Mistral-7B-shaped model with random weights, built from its config (nothing is
downloaded), saved as bf16 safetensors (~14.5 GB) under --workdir, then loaded through esllm's loader
with nf4 and with no quantisation; one random LoRA adapter (r=16, q_proj/v_proj) is loaded through
the engine on the nf4 base:

    PYTHONPATH=. python bench/bench_engine.py --gpu-7b [--workdir /tmp/esllm-bench-7b]
    PYTHONPATH=. python bench/bench_engine.py --gpu-7b --tiny   # same code path, tiny model on CPU (a check)

What it does not know: CPU numbers on a shared machine move with whatever else runs on it (each
section prints the load average, each generation how many cores other processes used meanwhile; with
torch's default of one thread per core, one busy core can cut tokens/s several times over); "warm"
loads read files the OS page cache probably holds; tokens/s is batch 1, greedy, HF eager attention,
EOS ignored (decode() with no EOS ids), so the count of new tokens is fixed; random weights make the
7B model's text meaningless (mostly empty: ids past the small tokenizer's vocabulary decode to nothing).

Pieces: bench/common.py (shared helpers), bench/gpu7b.py (section 4).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/bench_engine.py` works too

from bench.common import (  # noqa: E402
    PROMPT,
    SHORT_PROMPT,
    engine_config,
    header,
    no_progress_bars,
    peak_rss_mib,
    print_decode,
    print_switches,
    quiet,
    rss_mib,
    time_switches,
    timed_decode,
    write_random_lora,
)


# ---------------------------------------------------------------- 1. cold vs warm
def bench_cold_warm(key: str, spec, skip_cold: bool) -> None:
    from esllm.engine.bundled import cache_root, converted_dir, gguf_path
    from esllm.engine.loader import load_base

    header(f"1. Cold vs warm load of {key} ({spec.source}, quantization={spec.quantization})")
    if not spec.source.startswith("bundled:"):
        print("  skipped: the default model is not a bundled GGUF")
        return
    name = spec.source.removeprefix("bundled:")
    cold = None
    if skip_cold:
        print("  cold: skipped (--skip-cold)")
    else:
        tmp, saved = tempfile.mkdtemp(prefix="esllm-cold-"), os.environ.get("ESLLM_CACHE")
        os.environ["ESLLM_CACHE"] = tmp
        try:
            t0 = time.perf_counter()
            gguf_path(name)
            t_asm = time.perf_counter() - t0
            converted_dir(name, quiet)
            t_conv = time.perf_counter() - t0 - t_asm
            base = load_base(key, spec, quiet)
            cold = time.perf_counter() - t0
            print(f"  cold (empty ESLLM_CACHE={tmp}): {cold:.1f} s = assemble GGUF {t_asm:.1f} s + convert to "
                  f"safetensors {t_conv:.1f} s + load_base {base.load_seconds:.1f} s "
                  f"({base.footprint_bytes / 2**20:.0f} MiB)")
            del base
        finally:
            if saved is None:
                os.environ.pop("ESLLM_CACHE", None)
            else:
                os.environ["ESLLM_CACHE"] = saved
            shutil.rmtree(tmp, ignore_errors=True)
            gc.collect()
    hits = list((cache_root() / "converted").glob(f"{name}-*/model.safetensors"))
    print(f"  warm cache {cache_root()}: {'present' if hits else 'EMPTY (this warm load converts: it is cold)'}")
    t0 = time.perf_counter()
    converted_dir(name, quiet)
    t_check = time.perf_counter() - t0
    base = load_base(key, spec, quiet)
    print(f"  warm (load_base from the cache): {base.load_seconds:.1f} s "
          f"(of which cache check = assemble verify + GGUF sha256: ~{t_check:.1f} s)")
    if cold:
        print(f"  cold / warm = {cold / base.load_seconds:.1f}x")
    del base
    gc.collect()


# ---------------------------------------------------------------- 2. adapter switch vs reload
def bench_switch(key: str, spec, n_switches: int, n_reloads: int) -> None:
    from esllm.engine.adapters import peft_name
    from esllm.engine.core import Engine
    from esllm.engine.loader import load_base

    header(f"2. Adapter switch vs base reload ({key}, {spec.quantization})")
    if os.environ.pop("ESLLM_ADAPTERS_DIR", None):
        print("  note: ESLLM_ADAPTERS_DIR was set; ignored here")
    reloads = []
    for _ in range(n_reloads):
        base = load_base(key, spec, quiet)
        reloads.append(base.load_seconds)
    adir = Path(tempfile.mkdtemp(prefix="esllm-adapters-"))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    for i, a in enumerate(("a1", "a2")):
        n_mod = write_random_lora(base.model, adir / a, r=8, targets=targets, seed=i + 1, base_name=spec.source)
    print(f"  adapters a1, a2: random LoRA r=8 on {','.join(targets)} ({n_mod} modules each) in {adir}")
    del base
    gc.collect()
    try:
        engine = Engine(engine_config(key, spec, ["a1", "a2"], adir), root=adir, progress=quiet)
        t0 = time.perf_counter()
        engine.start()
        print(f"  Engine.start (base load + 2 adapters): {time.perf_counter() - t0:.1f} s; "
              f"errors: {engine.base_errors or engine.adapter_errors or 'none'}")
        # The engine's whole request path, to show switching really changes the model and comes back.
        seq = ["base", "base+a1", "base+a2", "base+a1", "base"]
        texts = [engine.generate(c, [{"role": "user", "content": SHORT_PROMPT}], preset="greedy",
                                 overrides={"max_new_tokens": 8}).text for c in seq]
        for c, t in zip(seq, texts):
            print(f"    {c:8s} -> {t!r}")
        ok = texts[0] == texts[4] and texts[1] == texts[3] and len({texts[0], texts[1], texts[2]}) == 3
        print(f"  check (3 different answers, same answer when a contestant comes back): {'OK' if ok else 'FAILED'}")
        base = engine.bases[key]
        switch, disable = time_switches(base, [peft_name("a1"), peft_name("a2")], n_switches)
    finally:
        shutil.rmtree(adir, ignore_errors=True)
    print_switches(switch, disable, 2)
    reload = statistics.median(reloads)
    print(f"  base reload (load_base, warm cache): median {reload:.2f} s of {[round(x, 2) for x in reloads]}")
    ratio = reload * 1e9 / statistics.median(switch)
    print(f"  reload / switch = {ratio:,.0f}x  (target >= 500x: {'MET' if ratio >= 500 else 'NOT MET'}); "
          f"reload / disable_adapter = {reload * 1e9 / statistics.median(disable):,.0f}x")
    del engine, base
    gc.collect()


# ---------------------------------------------------------------- 3. tokens/s and memory, nf4 vs none
_CHILD: dict = {}  # state of a section-3 worker process: its one loaded base model


def _child_load(key: str, spec_json: str, threads: int) -> dict:
    """In a fresh worker process, so RSS belongs to this one model alone."""
    no_progress_bars()
    import torch  # (imported before the baseline: the libraries are not the model)
    import transformers  # noqa: F401

    if threads:
        torch.set_num_threads(threads)

    from esllm.engine.config import ModelSpec
    from esllm.engine.loader import load_base

    spec = ModelSpec.model_validate_json(spec_json)
    rss0 = rss_mib()
    base = _CHILD["base"] = load_base(key, spec, quiet)
    info = {"load_s": base.load_seconds, "footprint_mib": base.footprint_bytes / 2**20, "rss_before_mib": rss0,
            "rss_loaded_mib": rss_mib(), "device": base.device}
    timed_decode(base, 4)  # warm-up: first-call kernel set-up is not decoding speed
    return info


def _child_gen(n_new: int) -> dict:
    return timed_decode(_CHILD["base"], n_new)


def _child_mem() -> tuple[float, float]:
    return rss_mib(), peak_rss_mib()


def bench_speed(key: str, spec, n_new: int, runs: int, threads: int) -> None:
    header(f"3. tokens/s and memory, nf4 vs none ({key}, greedy, {n_new} new tokens, EOS ignored, {runs} runs each)")
    print(f"  prompt (template {spec.template}): {PROMPT!r}")
    print("  one worker process per quantisation (clean RSS); runs alternate nf4/none so both see the same load")
    quants = ("nf4", "none")
    ctx = mp.get_context("spawn")
    pools = {q: ctx.Pool(1) for q in quants}
    try:
        rows = {}
        for q in quants:
            s = spec.model_copy(update={"quantization": q})
            r = rows[q] = pools[q].apply(_child_load, (key, s.model_dump_json(), threads))
            print(f"  [{q}] device {r['device']}, load {r['load_s']:.1f} s, get_memory_footprint "
                  f"{r['footprint_mib']:.0f} MiB; RSS {r['rss_before_mib']:.0f} MiB with torch+transformers imported "
                  f"-> {r['rss_loaded_mib']:.0f} MiB loaded")
            r["gens"] = []
        for i in range(runs):
            for q in quants:
                g = pools[q].apply(_child_gen, (n_new,))
                rows[q]["gens"].append(g)
                print_decode(f"{q} run {i + 1}", g)
        for q in quants:
            r = rows[q]
            r["rss_after_mib"], r["peak_rss_mib"] = pools[q].apply(_child_mem)
            r["tok_s"] = statistics.median(g["tok_s"] for g in r["gens"])
            print(f"  [{q}] median {r['tok_s']:.2f} tok/s; RSS after generating {r['rss_after_mib']:.0f} MiB "
                  f"(high-water mark {r['peak_rss_mib']:.0f} MiB)")
    finally:
        for pool in pools.values():
            pool.terminate()
    a, b = rows["nf4"], rows["none"]
    grow = lambda r: r["rss_loaded_mib"] - r["rss_before_mib"]  # noqa: E731
    print(f"  nf4 / none: tokens/s {a['tok_s'] / b['tok_s']:.2f}x, get_memory_footprint "
          f"{a['footprint_mib'] / b['footprint_mib']:.2f}x, RSS growth from the load {grow(a):.0f} / {grow(b):.0f} MiB "
          f"= {grow(a) / grow(b):.2f}x, high-water mark {a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x")


# ---------------------------------------------------------------- main
def versions() -> str:
    import importlib.metadata as md

    import torch

    out = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    for pkg in ("transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            out.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            out.append(f"{pkg} missing")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    return ", ".join(out) + f"; {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; {gpu}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="contestants YAML (default: configs/default.yaml)")
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold GGUF conversion (~100 s on 2 cores)")
    ap.add_argument("--switches", type=int, default=200, help="adapter switches to time (default 200)")
    ap.add_argument("--reloads", type=int, default=3, help="base reloads to time (default 3)")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per generation (default 64; 128 with --gpu-7b)")
    ap.add_argument("--gen-runs", type=int, default=3, help="timed generations per quantisation (default 3)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (default: torch's own, one per core; 1 holds up better on a busy machine)")
    ap.add_argument("--gpu-7b", action="store_true", help="only the Mistral-7B-shaped GPU benchmark")
    ap.add_argument("--tiny", action="store_true", help="with --gpu-7b: a tiny Mistral on CPU, to check the code path")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "esllm-bench-7b"),
                    help="with --gpu-7b: where the random model is saved (~14.5 GB)")
    args = ap.parse_args(argv)
    if args.tiny and not args.gpu_7b:
        ap.error("--tiny only goes with --gpu-7b")
    no_progress_bars()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"esllm engine benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(versions())
    t0 = time.perf_counter()
    if args.gpu_7b:
        from bench.gpu7b import bench_gpu_7b

        bench_gpu_7b(Path(args.workdir), args.tiny, args.new_tokens or 128, args.switches)
    else:
        from esllm.engine.config import load_config

        cfg = load_config(args.config)
        key = next(iter(cfg.models))
        spec = cfg.models[key]
        print(f"default model: {key} = {json.dumps(spec.model_dump(), ensure_ascii=False)}")
        bench_cold_warm(key, spec, args.skip_cold)
        bench_switch(key, spec, args.switches, args.reloads)
        bench_speed(key, spec, args.new_tokens or 64, args.gen_runs, args.threads)
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
