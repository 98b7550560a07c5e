"""What a training run leaves behind besides the adapter weights: loss log, loss plot, metadata, model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOG = "train_log.jsonl"
PLOT = "loss.png"
META = "esllm_adapter.json"
CARD = "README.md"


def append_log(out_dir: Path, record: dict[str, Any]) -> None:
    with (out_dir / LOG).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_log(out_dir: Path) -> list[dict[str, Any]]:
    p = out_dir / LOG
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_log(out_dir: Path, step: int) -> None:
    """On resume, forget records after the checkpoint's step (they will be redone)."""
    recs = [r for r in read_log(out_dir) if r.get("step", 0) <= step]
    (out_dir / LOG).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")


def plot_losses(out_dir: Path, title: str, exported_step: int | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(out_dir)
    tr = [(r["step"], r["loss"]) for r in recs if "loss" in r]
    ev = [(r["step"], r["eval_loss"]) for r in recs if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if tr:
        ax.plot(*zip(*tr), label="entrenamiento", color="#1f77b4", alpha=0.8)
    if ev:
        ax.plot(*zip(*ev), "o-", label="validación (held-out)", color="#d62728")
    if exported_step is not None:
        ax.axvline(exported_step, color="#2ca02c", linestyle="--", label=f"exportado (paso {exported_step})")
    ax.set_xlabel("paso del optimizador")
    ax.set_ylabel("pérdida (entropía cruzada por token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out_dir / PLOT
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_preference(out_dir: Path, title: str, exported_step: int | None = None) -> Path:
    """DPO/KTO: the loss (train and held-out) and, on a second axis, the reward margin (chosen - rejected)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(out_dir)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 6), dpi=100, sharex=True)
    tr = [(r["step"], r["loss"]) for r in recs if "loss" in r]
    ev = [(r["step"], r["eval_loss"]) for r in recs if "eval_loss" in r]
    if tr:
        ax.plot(*zip(*tr), label="entrenamiento", color="#1f77b4", alpha=0.8)
    if ev:
        ax.plot(*zip(*ev), "o-", label="validación (held-out)", color="#d62728")
    for key, label, color in (("rewards_margins", "margen de recompensa", "#2ca02c"),
                              ("eval_rewards_margins", "margen (validación)", "#9467bd"), ("kl", "KL", "#8c564b")):
        pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
        if pts:
            ax2.plot(*zip(*pts), ".-", label=label, color=color)
    for a in (ax, ax2):
        if exported_step is not None:
            a.axvline(exported_step, color="#7f7f7f", linestyle="--", label=f"exportado (paso {exported_step})")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    ax.set_ylabel("pérdida")
    ax2.set_ylabel("recompensa")
    ax2.set_xlabel("paso del optimizador")
    ax.set_title(title)
    fig.tight_layout()
    path = out_dir / PLOT
    fig.savefig(path)
    plt.close(fig)
    return path


def write_card(out_dir: Path, meta: dict[str, Any]) -> None:
    r = meta["recipe"]
    method = meta.get("method", "sft")
    data = meta.get("data") or {}
    if method == "sft":
        data_line = (f"- Datos: `{r['data']['path']}` (sha256 `{meta['dataset_sha256'][:16]}`): {meta['examples_used']} ejemplos usados, "
                     f"{meta['examples_dropped']} descartados por largos (> {r['data']['max_seq_len']} tokens), {meta['eval_examples']} de validación")
    else:
        origin = (f"sesión de evaluación `{data['session']}` ({data.get('ratings', '?')} puntuaciones, diferencia mínima {data.get('min_gap')})"
                  if data.get("session") else "👍/👎 del chat" if data.get("feedback") else f"`{r['data']['path']}`")
        data_line = (f"- Método: {method.upper()} (beta {r['preference']['beta']}), desde "
                     f"{'el adaptador `' + meta['parent_adapter'] + '`' if meta.get('parent_adapter') else 'el modelo base'}; "
                     f"datos: {origin} (sha256 `{meta['dataset_sha256'][:16]}`): {meta['examples_used']} ejemplos, "
                     f"{meta['examples_dropped']} descartados por largos, {meta['eval_examples']} de validación")
    lines = [
        f"# {out_dir.name}",
        "",
        meta.get("description") or "Adaptador LoRA entrenado con `python -m esllm train`.",
        "",
        "## Qué es",
        f"- Modelo base: `{r['model']['source']}` (huella `{meta['base_fingerprint'][:16]}`), cuantización de entrenamiento `{r['model']['quantization']}`",
        f"- LoRA r={r['lora']['r']}, alpha={r['lora']['alpha']}, dropout={r['lora']['dropout']}, módulos {', '.join(r['lora']['target_modules'])}",
        f"- Plantilla: `{meta['template']}` (úsela al conversar; esllm la aplica sola)",
        data_line,
        f"- Entrenamiento: {meta['steps']} pasos, {meta['epochs_done']:.2f} épocas, {meta['wall_seconds']:.0f} s en {meta['device']} ({meta['optimizer']})",
        f"- Pérdida final: entrenamiento {meta['final_train_loss']:.4f}, validación {meta['final_eval_loss']:.4f} "
        + (f"(modelo base sin adaptador: {meta.get('base_eval_loss', float('nan')):.4f})" if method == "sft" else
           f"(referencia antes de entrenar: {meta.get('reference_eval_loss') or float('nan'):.4f}; "
           f"margen de recompensa {meta.get('final_reward_margin') or float('nan'):.3f})"),
        *([f"- Pesos exportados: paso {meta['exported_step']} — {meta['export_reason']}"] if meta.get("export_reason") else []),
        "",
        "![pérdida](loss.png)",
        "",
        "## Uso sin esllm",
        f"La carpeta trae `chat_template.jinja`, el tokenizador y `generation_config.json` (EOS y cadenas de parada); "
        f"`base_model_name_or_path` es `{meta.get('base_model', r['model']['source'])}`:",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig",
        f"tok = AutoTokenizer.from_pretrained(\"{out_dir.name}\")",
        f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"{meta.get('base_model', r['model']['source'])}\"), \"{out_dir.name}\")",
        "ids = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"Hola\"}], add_generation_prompt=True, return_tensors=\"pt\")",
        f"out = model.generate(ids, generation_config=GenerationConfig.from_pretrained(\"{out_dir.name}\"), tokenizer=tok, max_new_tokens=200)",
        "```",
        "",
        "## Límites",
        meta.get("limits") or "Modelo pequeño: puede inventar datos. No lo use para decisiones importantes.",
        "",
    ]
    (out_dir / CARD).write_text("\n".join(lines), encoding="utf-8")


def write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    (out_dir / META).write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
