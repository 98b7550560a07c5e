"""«Conversar» › the contestant's card and «Modelos y adaptadores»: formatting only, no handlers, no layout.

The card says what a contestant is (model, backend, adapter, template, preset: the engine's English
`ContestantRecord`, given Spanish keys here by `contestant_info`) and shows its adapter's training card, as Markdown
with Spanish labels; the adapter's loss plot is handed over as an image, so
no file path is served. The status table lists every contestant, adapter folder with a problem, and base that did
not load. Used by esllm/ui/conversar.py.
"""

from __future__ import annotations

from typing import Any

from esllm.engine.runner import ContestantRecord
from esllm.ui.context import AppContext

BACKEND_NAMES = {"openai": "servidor OpenAI-compatible"}
DETAIL_KEYS = {"memory_mib": "memoria_MiB", "load_s": "carga_s", "architecture": "arquitectura", "threads": "hilos",
               "api": "api", "served_models": "modelos_servidos", "concurrency": "concurrencia"}


def contestant_info(r: ContestantRecord) -> dict[str, Any]:
    """The record with the Spanish keys the card (and the API's JSON) show."""
    d: dict[str, Any] = {"concursante": r.name, "disponible": r.available}
    if not r.available:
        d["motivo"] = r.reason
    d["modelo"] = r.base
    if r.available:
        d.update({"origen": r.base_source, "motor": BACKEND_NAMES.get(r.backend, r.backend),
                  "cuantización": r.quantization, "tipo_de_datos": r.dtype or None, "dispositivo": r.device})
        d.update({DETAIL_KEYS.get(k, k): v for k, v in r.details.items()})
    if r.served_model:
        d["modelo_servido"] = r.served_model
        if r.lora:
            d["lora"] = r.lora
    else:
        d["adaptador"] = r.adapter or "ninguno (modelo base)"
    d.update({"adaptador_r": r.adapter_rank, "adaptador_sha256": r.adapter_sha256[:16] if r.adapter_sha256 else None,
              "adaptador_MiB": r.adapter_mib})
    d["plantilla"] = "la del servidor (API chat)" if r.template == "server" else r.template
    d["plantilla_sha256"] = r.template_sha256[:16] if r.template_sha256 else None
    d["preset"] = r.preset
    if r.params:
        d["parámetros"] = dict(r.params)
    return {k: v for k, v in d.items() if v is not None}


def status_markdown(ctx: AppContext) -> str:
    eng = ctx.engine
    lines = ["| concursante | modelo | adaptador | estado |", "|---|---|---|---|"]
    for c in eng.registry.contestants.values():
        state = "disponible" if c.available else f"**no disponible**: {c.reason}"
        adapter = c.adapter or (f"en el servidor: {c.served_model}" if getattr(c, "served_model", None) else "—")
        lines.append(f"| {c.name} | {c.model_key} | {adapter} | {state} |")
    bad = dict(eng.registry.adapter_errors)
    if bad:
        lines += ["", "**Carpetas de adaptador con problemas**", ""]
        lines += [f"- `{n}`: {r}" for n, r in bad.items()]
    for key, err in eng.registry.base_errors.items():
        lines += ["", f"**Modelo {key} no cargado:** {err}"]
    return "\n".join(lines)


def adapter_card(ctx: AppContext, name) -> tuple[dict, Any]:
    """An adapter's training metadata and its loss plot (as an image, so no file path is served)."""
    if not name:
        return {}, None
    c = ctx.engine.registry.contestants.get(name)
    info = ctx.engine.registry.adapters.get(c.adapter) if c and c.adapter else None
    meta, plot = info.card() if info else ({}, None)
    if not meta:
        return {"adaptador": "ninguno (modelo base)" if c else "—"}, None
    if plot is None:
        return meta, None
    from PIL import Image

    with Image.open(plot) as im:
        return meta, im.copy()


CARD_LABELS = {"description": "Descripción", "base_source": "Modelo base", "examples_used": "Ejemplos usados",
               "examples_dropped": "Ejemplos descartados (demasiado largos)", "eval_examples": "Ejemplos de validación",
               "steps": "Pasos", "epochs_done": "Épocas", "final_train_loss": "Pérdida final (entrenamiento)",
               "final_eval_loss": "Pérdida final (validación)", "base_eval_loss": "Pérdida del modelo base (validación)",
               "wall_seconds": "Duración (s)", "device": "Dispositivo", "optimizer": "Optimizador",
               "dataset_sha256": "sha256 del conjunto de datos", "finished_at": "Terminado (UTC)", "limits": "Límites",
               "lora": "LoRA"}
INFO_LABELS = {"modelo": "Modelo", "motor": "Motor", "origen": "Origen", "cuantización": "Cuantización", "dispositivo": "Dispositivo",
               "memoria_MiB": "Memoria (MiB)", "carga_s": "Carga (s)", "adaptador": "Adaptador",
               "adaptador_r": "Rango LoRA (r)", "adaptador_sha256": "sha256 del adaptador",
               "adaptador_MiB": "Tamaño del adaptador (MiB)", "plantilla": "Plantilla de chat",
               "preset": "Preset de generación", "motivo": "Motivo", "servidor": "Servidor",
               "api": "API", "modelos_servidos": "Modelos que sirve", "concurrencia": "Peticiones a la vez (lotes)",
               "modelo_servido": "Modelo servido", "tipo_de_datos": "Tipo de datos",
               "arquitectura": "Arquitectura", "hilos": "Hilos", "plantilla_sha256": "sha256 de la plantilla",
               "parámetros": "Parámetros propios", "lora": "LoRA del servidor"}


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, float):
        return f"{v:.4g}".replace(".", ",")
    text = str(v).replace("\n", " ")
    return text if text else "—"


def _table(rows: dict, labels: dict) -> str:
    """One line per field: «**Label**: value» (a list, not a table: no empty header row)."""
    return "\n".join(f"- **{labels.get(k, k.replace('_', ' ').capitalize())}**: {_value(v)}"
                     for k, v in rows.items() if v is not None)


def card_markdown(info: dict, meta: dict) -> str:
    """The contestant card as text: what it is, then its adapter's training card (not raw JSON)."""
    if not info:
        return ""
    state = "disponible" if info.get("disponible") else "**no disponible**"
    head = f"### {info.get('concursante', '')}\n\n{state}\n\n"
    rest = {k: v for k, v in info.items() if k not in ("concursante", "disponible")}
    out = head + _table(rest, INFO_LABELS)
    train = {k: v for k, v in (meta or {}).items() if k != "adaptador"}
    if train:
        out += "\n\n#### Ficha del adaptador (entrenamiento)\n\n" + _table(train, CARD_LABELS)
    elif info.get("adaptador") and "ninguno" not in str(info.get("adaptador")):
        out += "\n\nEl adaptador no trae ficha de entrenamiento (esllm_adapter.json)."
    return out
