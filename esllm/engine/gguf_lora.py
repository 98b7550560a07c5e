"""A peft LoRA folder as a GGUF LoRA adapter for llama.cpp, written once with the `gguf` package's writer and
cached under `<cache>/lora-gguf/`, keyed by the adapter's sha256 (a retrained adapter is a new file).

    path = convert_adapter(info, base_gguf_path, base_metadata)

Each `...layers.N.<module>.lora_A/B.weight` becomes `blk.N.<gguf name>.weight.lora_a/b` (names from the
`gguf` package's own HF-to-GGUF table), checked against the base GGUF's tensors; `adapter.lora.alpha` keeps
peft's scaling (alpha / r; rsLoRA's alpha / sqrt(r) is written as an equivalent alpha). For the `llama`
architecture (LLaMA-2, Mistral) the rows of q/k's B matrices are permuted as llama.cpp's converter permutes
the base's q/k weights. What cannot be mapped (per-module ranks, DoRA, trained biases, fully trained
modules, an architecture or a module llama.cpp's LoRA cannot take) raises EsllmError with the reason, so
the adapter is listed as unavailable with it.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from esllm import EsllmError
from esllm.engine.adapters import WEIGHTS, AdapterInfo
from esllm.engine.bundled import cache_root

SUPPORTED = ("llama", "gemma3", "gemma2", "gemma", "qwen2", "qwen3")  # archs whose q/k need no extra care beyond llama's
FORMAT = "esllm-lora-gguf-1"  # bump when the conversion changes: old cache files are then ignored


def convert_adapter(info: AdapterInfo, base_gguf: Path, meta: Mapping[str, Any]) -> Path:
    """The GGUF LoRA file of `info` for the base in `base_gguf` (converted on first use)."""
    import hashlib

    arch = str(meta.get("general.architecture", ""))
    # keyed by the weights' sha256 and the adapter's config (alpha, rsLoRA, ... change the conversion too)
    cfg = hashlib.sha256((info.path / "adapter_config.json").read_bytes()).hexdigest()[:8]
    out = cache_root() / "lora-gguf" / f"{info.name}-{info.sha256[:16]}-{cfg}-{arch}-{FORMAT}.gguf"
    if out.is_file():
        return out
    tensors, alpha = _mapped(info, base_gguf, meta, arch)
    import gguf

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_string("general.type", "adapter")
        w.add_string("general.name", info.name)
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", float(alpha))
        for name, arr in tensors.items():
            w.add_tensor(name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        tmp.replace(out)
    except OSError as e:
        raise EsllmError(f"No se pudo escribir la conversión GGUF del adaptador {info.name} en {out.parent}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _mapped(info: AdapterInfo, base_gguf: Path, meta: Mapping[str, Any], arch: str) -> tuple[dict[str, np.ndarray], float]:
    import gguf
    from safetensors.numpy import load_file

    if arch not in SUPPORTED:
        raise EsllmError(f"llama.cpp no admite adaptadores LoRA de la arquitectura {arch!r} en esllm "
                         f"(admitidas: {', '.join(SUPPORTED)}); use backend: transformers para este modelo")
    cfg = json.loads((info.path / "adapter_config.json").read_text(encoding="utf-8"))
    r = int(cfg.get("r") or 0)
    alpha = float(cfg.get("lora_alpha") or r)
    problems = []
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        problems.append("usa rangos o alphas distintos por módulo (rank_pattern/alpha_pattern)")
    if cfg.get("use_dora"):
        problems.append("es DoRA (use_dora)")
    if cfg.get("modules_to_save"):
        problems.append(f"entrena módulos completos ({cfg['modules_to_save']})")
    if str(cfg.get("bias", "none")) != "none":
        problems.append(f"entrena sesgos (bias: {cfg['bias']})")
    if problems:
        raise EsllmError("no se puede convertir a LoRA de llama.cpp: " + "; ".join(problems))
    if cfg.get("use_rslora"):
        alpha = alpha * math.sqrt(r) if r else alpha  # rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha/r
    n_blocks = int(meta.get(f"{arch}.block_count", 0))
    tmap = gguf.TensorNameMap({v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch], n_blocks)
    base_shapes = tensor_shapes(base_gguf)
    n_head = int(meta.get(f"{arch}.attention.head_count", 0) or 0)
    n_kv = int(meta.get(f"{arch}.attention.head_count_kv", 0) or n_head)
    weights = load_file(str(info.path / WEIGHTS))
    out: dict[str, np.ndarray] = {}
    for key, arr in weights.items():
        k = key.removeprefix("base_model.model.")
        part = "lora_A" if ".lora_A." in k else "lora_B" if ".lora_B." in k else None
        if part is None:
            raise EsllmError(f"no se puede convertir a LoRA de llama.cpp: tensor inesperado {key}")
        module = k.split(f".{part}.")[0]
        name = tmap.get_name(module + ".weight", try_suffixes=(".weight",))
        if name is None or name not in base_shapes:
            raise EsllmError(f"no se puede convertir a LoRA de llama.cpp: la capa {module} no tiene equivalente "
                             f"en el GGUF base ({arch})")
        ne = base_shapes[name]  # GGML order: [in, out]
        a = np.ascontiguousarray(arr.astype(np.float32))
        if part == "lora_A" and a.shape[1] != ne[0] or part == "lora_B" and a.shape[0] != ne[1]:
            raise EsllmError(f"no se puede convertir a LoRA de llama.cpp: {key} tiene forma {list(a.shape)} y la "
                             f"capa base {name} tiene {list(reversed(ne))}")
        if part == "lora_B" and arch == "llama" and n_head:
            if name.endswith("attn_q.weight"):
                a = _permute(a, n_head, n_head)
            elif name.endswith("attn_k.weight"):
                a = _permute(a, n_head, n_kv)
        out[f"{name}.lora_{part[-1].lower()}"] = a
    if not out:
        raise EsllmError("no se puede convertir a LoRA de llama.cpp: el adaptador no tiene pesos LoRA")
    return out, alpha


def _permute(w: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.LlamaModel.permute: HF's rotary halves -> GGML's interleaved pairs."""
    if n_kv and n_head != n_kv:
        n_head = n_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# GGUF value types -> size in bytes (8 = string, 9 = array are variable)
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """{tensor name: its dims in GGML order ([in, out] for a matrix)} read from a GGUF header.

    Not `gguf.GGUFReader`: it builds a numpy view per element of every metadata array, 13-15 s for a
    262k-token vocabulary on this CPU. Here the metadata is skipped, only the tensor table is read.
    """
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:4] != b"GGUF":
            raise EsllmError(f"{path} no es un archivo GGUF")
        version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
        if version < 2:
            raise EsllmError(f"{path}: versión GGUF {version} no admitida")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # only the header's pages are touched
    pos = 24

    def u32() -> int:
        nonlocal pos
        pos += 4
        return struct.unpack_from("<I", buf, pos - 4)[0]

    def u64() -> int:
        nonlocal pos
        pos += 8
        return struct.unpack_from("<Q", buf, pos - 8)[0]

    def skip(kind: int) -> None:
        nonlocal pos
        if kind == 8:
            pos += 8 + struct.unpack_from("<Q", buf, pos)[0]
        elif kind == 9:
            sub, n = u32(), u64()
            if sub in _SIZES:
                pos += _SIZES[sub] * n
            else:
                for _ in range(n):
                    skip(sub)
        else:
            pos += _SIZES[kind]

    try:
        for _ in range(n_kv):
            skip(8)  # the key
            skip(u32())
        shapes = {}
        for _ in range(n_tensors):
            n = u64()
            name = buf[pos:pos + n].decode("utf-8")
            pos += n
            dims = [u64() for _ in range(u32())]
            u32()  # type
            u64()  # offset
            shapes[name] = dims
    except (struct.error, KeyError, UnicodeDecodeError) as e:
        raise EsllmError(f"{path}: cabecera GGUF ilegible ({type(e).__name__})") from None
    finally:
        buf.close()
    return shapes
