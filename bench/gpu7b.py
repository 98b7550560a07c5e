"""Section 4 of the engine benchmark: a Mistral-7B-shaped model with random weights on a CUDA GPU.

Builds the model from its config (nothing is downloaded) on the GPU, saves it as bf16 safetensors
(~14.5 GB) with a byte-level BPE tokenizer trained here, then loads it through esllm's loader with
nf4 and with no quantisation, and loads one random LoRA adapter through the engine on the nf4 base.
Run it through bench_engine.py:  PYTHONPATH=. python bench/bench_engine.py --gpu-7b [--tiny]
"""

from __future__ import annotations

import gc
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.common import (
    SHORT_PROMPT,
    engine_config,
    header,
    print_decode,
    print_switches,
    quiet,
    rss_mib,
    sync,
    time_switches,
    timed_decode,
    write_random_lora,
)

# Shape of Mistral-7B-v0.1 (the study's 7B family); weights are random.
MISTRAL_7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768, rope_theta=10000.0,
                  sliding_window=4096)
MISTRAL_TINY = dict(MISTRAL_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2)
TOKENIZER_CORPUS = [
    "Hola, ¿cómo estás? Estoy muy bien, gracias.", "La declaración del impuesto a la renta vence en marzo.",
    "¿Cuál es la capital de Ecuador? La capital de Ecuador es Quito.", "[INST] Explica qué es el IVA. [/INST]",
    "Los contribuyentes deben presentar sus facturas electrónicas al Servicio de Rentas Internas.",
]


def build_tokenizer():
    """Byte-level BPE trained on a few sentences (ids < 32000), as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TOKENIZER_CORPUS * 5, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def build_random_mistral(folder: Path, shape: dict, device: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig

    if (folder / "config.json").is_file() and list(folder.glob("*.safetensors")):
        print(f"  reusing {folder}")
        return
    tok = build_tokenizer()
    cfg = MistralConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):  # initialise on the GPU: seconds instead of minutes on the CPU
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    sync(device)
    t_init = time.perf_counter() - t0
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(folder)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e9
    n = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"  built {n:.2f} B params (random, bf16) in {t_init:.1f} s, saved {size:.2f} GB to {folder} in "
          f"{time.perf_counter() - t0 - t_init:.1f} s")
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def bench_gpu_7b(workdir: Path, tiny: bool, n_new: int, n_switches: int) -> None:
    import torch

    device = "cpu" if tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--gpu-7b needs CUDA (torch.cuda.is_available() is False); use --tiny for a CPU check")
    header(f"4. Mistral-7B shape, random weights, on {torch.cuda.get_device_name(0) if device == 'cuda' else 'CPU (tiny)'}")
    workdir.mkdir(parents=True, exist_ok=True)
    folder = workdir / ("mistral-tiny-random" if tiny else "mistral-7b-random")
    build_random_mistral(folder, MISTRAL_TINY if tiny else MISTRAL_7B, device)
    for quant in ("nf4", "none"):
        try:
            _gpu_one(folder, workdir, quant, device, n_new, n_switches)
        except Exception:  # report and go on with the other quantisation
            import traceback

            print(f"  [{quant}] FAILED:\n{traceback.format_exc()}")
    shutil.rmtree(workdir / "adapters", ignore_errors=True)


def _gpu_one(folder: Path, workdir: Path, quant: str, device: str, n_new: int, n_switches: int) -> None:
    """Load the random 7B with one quantisation; measure load, memory, tokens/s (and, nf4, one adapter)."""
    import torch

    from esllm.engine.adapters import peft_name
    from esllm.engine.config import ModelSpec
    from esllm.engine.core import Engine
    from esllm.engine.loader import load_base

    key = "mistral-7b-random"
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    spec = ModelSpec(source=str(folder), quantization=quant, device=device, template="mistral")
    base = load_base(key, spec, quiet)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"  [{quant}] load_base {base.load_seconds:.1f} s, get_memory_footprint "
          f"{base.footprint_bytes / 2**30:.2f} GiB, max_memory_allocated during load {peak:.2f} GiB, "
          f"RSS {rss_mib() / 1024:.1f} GiB")
    timed_decode(base, 4)
    r = timed_decode(base, n_new)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print_decode(quant, r)
    print(f"    max_memory_allocated after generation: {peak:.2f} GiB")
    if quant == "nf4":
        adir = workdir / "adapters"
        shutil.rmtree(adir, ignore_errors=True)
        write_random_lora(base.model, adir / "lora16", r=16, targets=["q_proj", "v_proj"], seed=3,
                          base_name=str(folder))
        engine = Engine(engine_config(key, spec, ["lora16"], adir), root=workdir,
                        loader=lambda *_, b=base: b, progress=quiet)  # the base loaded above, not a second copy
        t0 = time.perf_counter()
        engine.start()
        print(f"  adapter lora16 (r=16, q_proj,v_proj) loaded by the engine in {time.perf_counter() - t0:.2f} s; "
              f"errors: {engine.adapter_errors or 'none'}")
        switch, disable = time_switches(base, [peft_name("lora16")], n_switches)
        print_switches(switch, disable, 1)
        print(f"  reload / switch = {base.load_seconds * 1e9 / statistics.median(switch):,.0f}x "
              f"(reload = this load_base, {base.load_seconds:.1f} s)")
        with base.lock:
            base.model.set_adapter(peft_name("lora16"))
            r = timed_decode(base, n_new)
        print_decode("nf4 + lora16", r)
        res = engine.generate("base+lora16", [{"role": "user", "content": SHORT_PROMPT}],
                              overrides={"max_new_tokens": 16})
        print(f"  engine.generate('base+lora16'): {res.new_tokens} tokens, finish={res.finish_reason}, "
              f"{res.latency_s:.2f} s")
        del engine
    del base
    gc.collect()
