"""Shared pieces of the engine benchmarks: random LoRA folders, timed greedy decoding, adapter-switch timing.

Library code for bench/bench_engine.py and bench/gpu7b.py; it runs nothing on import.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

PROMPT = "Explica con detalle qué es el impuesto al valor agregado (IVA) y cómo se calcula en Ecuador."
SHORT_PROMPT = "Escribe una frase sobre Quito."


def quiet(_msg: str) -> None:
    pass


def no_progress_bars() -> None:
    """transformers' "Loading weights" / GGUF conversion bars would bury the report (call before they are made)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def header(title: str) -> None:
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n=== {title}  (load avg 1/5/15 min: {load}) ===", flush=True)


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    """This process's RSS high-water mark (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fmt_us(ns: float) -> str:
    return f"{ns / 1e3:.1f} µs"


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def write_random_lora(raw_model, folder: Path, r: int, targets: list[str], seed: int, base_name: str) -> int:
    """Save a peft LoRA folder with random A and B for every Linear named in `targets`, from the model's
    shapes alone (the model is not touched). Same distributions as peft's init_lora_weights=False.
    Returns the number of adapted modules."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, mod in raw_model.named_modules():
        if name.split(".")[-1] in targets and hasattr(mod, "in_features"):
            fin, fout = mod.in_features, mod.out_features
            a = (torch.rand(r, fin, generator=g) * 2 - 1) / fin ** 0.5
            b = (torch.rand(fout, r, generator=g) * 2 - 1) / r ** 0.5
            tensors[f"base_model.model.{name}.lora_A.weight"] = a.to(torch.bfloat16).contiguous()
            tensors[f"base_model.model.{name}.lora_B.weight"] = b.to(torch.bfloat16).contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM",
               base_model_name_or_path=base_name).save_pretrained(str(folder))
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return len(tensors) // 2


def timed_decode(base, n_new: int, prompt: str = PROMPT) -> dict:
    """Greedy decoding through esllm's decode(), EOS ignored, under the base's lock. The caller chose the adapter."""
    from esllm.engine.decoding import decode
    from esllm.engine.presets import GenParams
    from esllm.engine.templates import get_template

    tok = base.tokenizer
    text = get_template(base.spec.template).render([{"role": "user", "content": prompt}],
                                                   bos_token=tok.bos_token or "", eos_token=tok.eos_token or "")
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(base.model.device)
    params = GenParams.build("greedy", {"max_new_tokens": n_new}, max_new_tokens_cap=n_new)
    first: list[float] = []
    with base.lock:
        sync(base.device)
        busy0, mine0 = _cpu_seconds()
        t0 = time.perf_counter()
        out = decode(base.model, tok, ids, params, eos_ids=[], stop_strings=[], should_stop=lambda: False,
                     on_token=lambda t: first or first.append(time.perf_counter()))
        reason = "length" if len(out) >= n_new else "stopped"
        sync(base.device)
        latency = time.perf_counter() - t0
        busy1, mine1 = _cpu_seconds()
    ttft = (first[0] - t0) if first else float("nan")
    return {"prompt_tokens": int(ids.shape[1]), "new_tokens": len(out), "finish": reason, "latency_s": latency,
            "ttft_s": ttft, "tok_s": len(out) / latency,
            "decode_tok_s": (len(out) - 1) / (latency - ttft) if len(out) > 1 else float("nan"),
            "others_cores": max(0.0, (busy1 - busy0) - (mine1 - mine0)) / latency,
            "text": tok.decode(out, skip_special_tokens=True)}


def _cpu_seconds() -> tuple[float, float]:
    """(CPU-seconds the whole machine was busy, CPU-seconds this process used): their difference over a
    measurement is what other processes took from it."""
    import psutil

    m, p = psutil.cpu_times(), psutil.Process().cpu_times()
    return sum(m) - m.idle - getattr(m, "iowait", 0.0), p.user + p.system


def print_decode(label: str, r: dict) -> None:
    print(f"  {label}: {r['new_tokens']} new tokens (prompt {r['prompt_tokens']}, finish={r['finish']}) in "
          f"{r['latency_s']:.2f} s -> {r['tok_s']:.2f} tok/s  (first token {r['ttft_s']:.2f} s; "
          f"after it {r['decode_tok_s']:.2f} tok/s; other processes used {r['others_cores']:.1f} of "
          f"{os.cpu_count()} cores meanwhile)")
    print(f"    text: {r['text'][:160]!r}")


def time_switches(base, names: list[str], n: int) -> tuple[list[int], list[int]]:
    """What Engine.stream does per request before decoding: take the base lock, then set_adapter(name),
    or enter/exit disable_adapter() for the base alone. Returns (switch ns, disable ns)."""
    switch, disable = [], []
    model = base.model
    for i in range(n):
        t = time.perf_counter_ns()
        with base.lock:
            model.set_adapter(names[i % len(names)])
        switch.append(time.perf_counter_ns() - t)
    for _ in range(n):
        t = time.perf_counter_ns()
        with base.lock:
            with model.disable_adapter():
                pass
        disable.append(time.perf_counter_ns() - t)
    return switch, disable


def print_switches(switch: list[int], disable: list[int], n_names: int) -> None:
    q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))]  # noqa: E731
    for label, xs in ((f"lock + set_adapter (alternating over {n_names})", switch),
                      ("lock + disable_adapter() enter/exit", disable)):
        print(f"  {label}: median {fmt_us(statistics.median(xs))}, p90 {fmt_us(q(xs, 0.9))}, "
              f"max {fmt_us(max(xs))}  (n={len(xs)})")


def engine_config(key: str, spec, adapters: list[str], adapters_dir: Path):
    from esllm.engine.config import parse_config

    contestants = [{"name": "base", "model": key, "preset": "greedy"}]
    contestants += [{"name": f"base+{a}", "model": key, "adapter": a, "preset": "greedy"} for a in adapters]
    return parse_config({"models": {key: spec.model_dump()}, "contestants": contestants,
                         "adapters_dir": str(adapters_dir), "auto_contestants": False})
