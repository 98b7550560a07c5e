"""«Conversar» › the contestant's card and «Modelos y adaptadores»: formatting only, no handlers, no layout.

The card says what a contestant is (model, backend, adapter, template, preset: `Engine.describe`) and shows its
adapter's training card, as Markdown with Spanish labels; the adapter's loss plot is handed over as an image, so
no file path is served. The status table lists every contestant, adapter folder with a problem, and base that did
not load. Used by esllm/ui/conversar.py.
"""

from __future__ import annotations

from typing import Any

from esllm.ui.context import AppContext


def status_markdown(ctx: AppContext) -> str:
    eng = ctx.engine
    lines = ["| concursante | modelo | adaptador | estado |", "|---|---|---|---|"]
    for c in eng.contestants.values():
        state = "disponible" if c.available else f"**no disponible**: {c.reason}"
        adapter = c.adapter or (f"en el servidor: {c.served_model}" if getattr(c, "served_model", None) else "—")
        lines.append(f"| {c.name} | {c.model_key} | {adapter} | {state} |")
    bad = {n: r for n, r in eng.adapter_errors.items()}
    if bad:
        lines += ["", "**Carpetas de adaptador con problemas**", ""]
        lines += [f"- `{n}`: {r}" for n, r in bad.items()]
    for key, err in eng.base_errors.items():
        lines += ["", f"**Modelo {key} no cargado:** {err}"]
    return "\n".join(lines)


def adapter_card(ctx: AppContext, name) -> tuple[dict, Any]:
    """An adapter's training metadata and its loss plot (as an image, so no file path is served)."""
    if not name:
        return {}, None
    meta, plot = ctx.engine.adapter_card(name)
    if not meta:
        return {"adaptador": "ninguno (modelo base)" if name in ctx.engine.contestants else "—"}, None
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
               "modelo_servido": "Modelo servido"}


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
