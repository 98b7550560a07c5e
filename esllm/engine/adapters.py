"""LoRA adapter folders: discovery, validation, and loading onto a base model.

An adapter folder is peft's format: `adapter_config.json` + `adapter_model.safetensors`
(pickle-only `.bin` folders are refused: loading them runs arbitrary code). It may also carry
`chat_template.jinja` (its own template, which wins over its base's) and `esllm_adapter.json`
(metadata written by `python -m esllm train`: template name, recipe, losses, ...).

`inspect_adapter` does every check that needs no model; `check_compatible` compares tensor
shapes with a loaded base, so an adapter trained for another base is reported, not half-loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from esllm import EsllmError
from esllm.engine.templates import ChatTemplate, get_template, template_from_jinja
from esllm.paths import file_sha256

log = logging.getLogger(__name__)

WEIGHTS = "adapter_model.safetensors"
META = "esllm_adapter.json"


@dataclass
class AdapterInfo:
    name: str
    path: Path
    ok: bool = False
    reason: str = ""
    base_hint: str = ""  # base_model_name_or_path from adapter_config.json
    r: Optional[int] = None
    alpha: Optional[float] = None
    target_modules: list[str] = field(default_factory=list)
    sha256: str = ""
    template: Optional[ChatTemplate] = None
    meta: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def card(self) -> tuple[dict[str, Any], Optional[Path]]:
        """(the training metadata worth showing, the loss plot's path or None)."""
        keys = ("description", "base_source", "examples_used", "examples_dropped", "eval_examples", "steps",
                "epochs_done", "final_train_loss", "final_eval_loss", "base_eval_loss", "wall_seconds", "device",
                "optimizer", "dataset_sha256", "finished_at", "limits")
        meta = {k: self.meta[k] for k in keys if k in self.meta}
        if "recipe" in self.meta:
            meta["lora"] = self.meta["recipe"].get("lora")
        plot = self.path / "loss.png"
        return meta, plot if plot.is_file() else None

    def summary(self) -> dict[str, Any]:
        return {
            "adaptador": self.name, "carpeta": str(self.path), "estado": "ok" if self.ok else "error",
            "motivo": self.reason, "base": self.base_hint, "r": self.r, "alpha": self.alpha,
            "módulos": self.target_modules, "sha256": self.sha256[:16],
            "plantilla": self.template.name if self.template else None,
        }


def peft_name(name: str) -> str:
    """peft stores adapters in ModuleDicts, whose keys may not contain dots."""
    return name.replace(".", "_")


def inspect_adapter(folder: Path) -> AdapterInfo:
    """Check a folder without a model. Never raises: problems land in `reason`."""
    info = AdapterInfo(name=folder.name, path=folder)
    try:
        _inspect(folder, info)
        info.ok = True
    except EsllmError as e:
        info.reason = str(e)
    except Exception as e:  # a broken folder must never take the app down
        info.reason = f"error inesperado al leer la carpeta: {type(e).__name__}: {e}"
    return info


def _inspect(folder: Path, info: AdapterInfo) -> None:
    cfg_path = folder / "adapter_config.json"
    if not folder.is_dir():
        raise EsllmError(f"no existe la carpeta {folder}")
    if not cfg_path.is_file():
        if (folder / "checkpoints").is_dir():
            raise EsllmError("entrenamiento en curso o interrumpido (solo hay checkpoints; continúe con --resume)")
        raise EsllmError("falta adapter_config.json: no es una carpeta de adaptador peft")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EsllmError(f"adapter_config.json no es JSON válido: {e}") from None
    if not isinstance(cfg, dict):
        raise EsllmError("adapter_config.json debe ser un objeto JSON")
    if cfg.get("peft_type") != "LORA":
        raise EsllmError(f"peft_type es {cfg.get('peft_type')!r}; solo se admiten adaptadores LORA")
    # Read by hand rather than with peft's LoraConfig: importing peft costs ~3.5 s of every start, and the
    # llama.cpp backend never needs it. peft itself checks the rest when the transformers backend loads it.
    r, alpha, tm = cfg.get("r", 8), cfg.get("lora_alpha", 8), cfg.get("target_modules")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise EsllmError(f"adapter_config.json: r debe ser un entero positivo (es {r!r})")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise EsllmError(f"adapter_config.json: lora_alpha debe ser un número positivo (es {alpha!r})")
    if isinstance(tm, str) and tm:
        tm = [tm]
    if not isinstance(tm, list) or not tm or not all(isinstance(x, str) and x for x in tm):
        raise EsllmError("adapter_config.json: target_modules debe ser una lista de nombres de módulos")
    info.base_hint = str(cfg.get("base_model_name_or_path") or "")
    info.r, info.alpha = r, alpha
    info.target_modules = sorted(set(tm))
    weights = folder / WEIGHTS
    if not weights.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise EsllmError(
                "solo tiene pesos pickle (adapter_model.bin), que se rechazan porque cargarlos puede ejecutar "
                "código; conviértalos a adapter_model.safetensors"
            )
        raise EsllmError(f"falta {WEIGHTS}")
    info.shapes = _read_shapes(weights)
    if not any(".lora_A." in k or ".lora_B." in k for k in info.shapes):
        raise EsllmError(f"{WEIGHTS} no contiene pesos LoRA (lora_A/lora_B)")
    info.sha256 = file_sha256(weights)
    meta_path = folder / META
    if meta_path.is_file():
        try:
            info.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise EsllmError(f"{META} no es JSON válido: {e}") from None
    jinja = folder / "chat_template.jinja"
    stops = tuple(info.meta.get("stop_strings", ()))
    if info.meta.get("template"):  # a built-in template named by the trainer (carries its stops)
        info.template = get_template(str(info.meta["template"]))
    elif jinja.is_file():
        info.template = template_from_jinja(f"{folder.name} (propia)", jinja.read_text(encoding="utf-8"), stops,
                                            tuple(info.meta.get("end_tokens", ())))


def _read_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from the safetensors header, after checking the file holds all the data it declares."""
    size = weights.stat().st_size
    try:
        with weights.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size:
                raise ValueError("cabecera incompleta")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise EsllmError(f"{WEIGHTS} está dañado o truncado ({e})") from None
    header.pop("__metadata__", None)
    try:
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
        shapes = {k: tuple(int(d) for d in t["shape"]) for k, t in header.items()}
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise EsllmError(f"{WEIGHTS} tiene una cabecera inválida ({e})") from None
    if 8 + n + end != size:
        raise EsllmError(f"{WEIGHTS} está truncado o dañado: declara {8 + n + end} bytes y tiene {size}")
    return shapes


def _module_of(key: str) -> tuple[str, str]:
    """'base_model.model.model.layers.0.q_proj.lora_A.weight' -> ('model.layers.0.q_proj', 'A')."""
    k = key.removeprefix("base_model.model.")
    for part in ("lora_A", "lora_B"):
        marker = f".{part}."
        if marker in k:
            return k.split(marker)[0], part[-1]
    return "", ""


def check_compatible(info: AdapterInfo, raw_model: Any) -> None:
    """Raise EsllmError if the adapter's tensors do not fit this base model's layers."""
    for key, shape in info.shapes.items():
        mod_path, ab = _module_of(key)
        if not mod_path:
            continue
        try:
            mod = raw_model.get_submodule(mod_path)
        except AttributeError:
            raise EsllmError(
                f"incompatible con este modelo base: la capa {mod_path} no existe "
                f"(¿entrenado para otro modelo? base declarada: {info.base_hint or 'desconocida'})"
            ) from None
        mod = getattr(mod, "base_layer", mod)
        fin, fout = getattr(mod, "in_features", None), getattr(mod, "out_features", None)
        if fin is None or len(shape) != 2:
            continue
        want = (info.r, fin) if ab == "A" else (fout, info.r)
        if ab == "A" and shape[1] != fin or ab == "B" and shape[0] != fout:
            raise EsllmError(
                f"incompatible con este modelo base: {key} tiene forma {list(shape)} y la capa espera {list(want)} "
                f"(base declarada: {info.base_hint or 'desconocida'})"
            )


def scan_dir(adapters_dir: Path) -> list[AdapterInfo]:
    if not adapters_dir.is_dir():
        return []
    return [inspect_adapter(p) for p in sorted(adapters_dir.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))]
