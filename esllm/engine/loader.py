"""Load one base model (bundled GGUF, hub id or local folder) with nf4 / int8 / no quantisation, in the
dtype its spec asks for (`resolve_dtype`: auto = float32 on CPU without quantisation, else bfloat16).

`load_base(key, spec)` returns a `BaseModel` holding the model, its tokenizer, its dtype (a name such as
"float32", for the run records), one lock and the adapters loaded onto it. Failures raise `EsllmError` with a
message that says what to do.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from esllm import EsllmError
from esllm.engine.bundled import converted_dir
from esllm.engine.config import ModelSpec

log = logging.getLogger(__name__)


@dataclass
class BaseModel:
    """A loaded base model shared by every contestant on it. Guard every use with `lock`."""

    key: str
    spec: ModelSpec
    model: Any  # transformers PreTrainedModel, or peft PeftModel once an adapter is loaded
    tokenizer: Any
    device: str
    quantization: str
    path: str
    source_sha256: Optional[str]
    load_seconds: float
    dtype: str  # "float32", "bfloat16" or "float16": what the weights were loaded in (resolve_dtype)
    lock: threading.RLock = field(default_factory=threading.RLock)
    adapters: dict[str, Any] = field(default_factory=dict)  # adapter name -> AdapterInfo

    @property
    def footprint_bytes(self) -> int:
        return int(self.model.get_memory_footprint())

    def describe(self) -> dict[str, Any]:
        return {
            "modelo": self.key,
            "origen": self.spec.source,
            "cuantización": self.quantization,
            "dtype": self.dtype,
            "dispositivo": self.device,
            "memoria_MiB": round(self.footprint_bytes / 2**20, 1),
            "carga_s": round(self.load_seconds, 2),
        }


def resolve_device(wanted: str) -> str:
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        raise EsllmError("Se pidió device: cuda pero no hay GPU CUDA disponible; use device: auto o cpu.")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def resolve_dtype(wanted: str, device: str, quantization: str) -> str:
    """The dtype a base is loaded in: `wanted`, or for "auto" float32 on CPU without quantisation and bfloat16
    otherwise (see ModelSpec.dtype)."""
    if wanted != "auto":
        return wanted
    return "float32" if device == "cpu" and quantization == "none" else "bfloat16"


def quantization_config(quant: str, device: str, dtype: str = "bfloat16"):
    import torch

    if quant == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401  (checked here so the error names the missing package)
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise EsllmError(f"La cuantización {quant} necesita bitsandbytes: `pip install -r requirements.txt`, o use quantization: none.") from None
    if quant == "nf4":
        # The study's setting: 4-bit NormalFloat, double quantisation, bf16 compute (dtype auto).
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, dtype),
        )
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise EsllmError(f"Cuantización desconocida {quant!r}: use nf4, int8 o none.")


def resolve_source(spec: ModelSpec, progress: Callable[[str], None]) -> tuple[str, Optional[str], bool]:
    """(path or hub id, source sha256 if known, is_local)."""

    src = spec.source.strip()
    if src.startswith("bundled:"):
        path, sha = converted_dir(src.removeprefix("bundled:"), progress)
        return str(path), sha, True
    p = Path(src).expanduser()
    looks_local = src.startswith(("/", "./", "../", "~")) or p.exists()
    if looks_local:
        if not p.is_dir():
            raise EsllmError(f"No existe la carpeta del modelo {src}. Corrija `source:` en la configuración.")
        if not (p / "config.json").is_file():
            raise EsllmError(f"La carpeta {src} no contiene config.json: no parece un modelo de transformers.")
        return str(p), None, True
    return src, None, False


def load_base(key: str, spec: ModelSpec, progress: Optional[Callable[[str], None]] = None) -> BaseModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = progress or log.info
    t0 = time.perf_counter()
    device = resolve_device(spec.device)
    path, sha, is_local = resolve_source(spec, say)
    dtype = resolve_dtype(spec.dtype, device, spec.quantization)
    say(f"Cargando {key} ({spec.quantization}, {dtype}, {device}) desde {path}…")
    qconf = quantization_config(spec.quantization, device, dtype)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "device_map": {"": device if device == "cpu" else 0}}
    if qconf is not None:
        kwargs["quantization_config"] = qconf
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        if not is_local:
            raise EsllmError(
                f"No se pudo obtener {path!r} del Hub de Hugging Face ({type(e).__name__}: {str(e)[:200]}). "
                "Sin conexión: descárguelo donde haya red (`hf download "
                f"{path} --local-dir modelos/{path.split('/')[-1]}`), cópielo aquí y ponga esa carpeta en `source:`. "
                "Los modelos Llama-2 exigen aceptar su licencia en el Hub."
            ) from None
        raise EsllmError(f"No se pudo cargar el modelo de {path}: {type(e).__name__}: {str(e)[:300]}") from None
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # pad = EOS where the tokenizer has none
    base = BaseModel(
        key=key, spec=spec, model=model, tokenizer=tok, device=device,
        quantization=spec.quantization, path=path, source_sha256=sha,
        load_seconds=time.perf_counter() - t0, dtype=dtype,
    )
    say(f"{key} listo en {base.load_seconds:.1f} s ({base.footprint_bytes / 2**20:.0f} MiB).")
    return base
