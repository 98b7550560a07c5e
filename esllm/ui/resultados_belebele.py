"""«Belebele» accordion (admins only; placed in «Resultados»): evaluate contestants on a Belebele-format
file from data/belebele/ and show the latest run per contestant and file with its 95% CI.

Every handler is declared `@handler("admin")`. The file is picked from the .jsonl files under data/belebele/
(the bundled sample and any real file copied there); any other path is refused, so a caller cannot make the
server read an arbitrary file. The work is esllm/evals/belebele.py. Handlers are module-level and take the
folder `build_belebele` binds (`data_dir`); the builder only lays out and wires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import gradio as gr
from sqlalchemy import select

from esllm import EsllmError
from esllm.evals.base import run_contestants
from esllm.evals.belebele import ACC_NOTE, KIND, Belebele
from esllm.evals.belebele_lmeval import DEFAULT_TEMPLATE
from esllm.evals.belebele_metrics import CHANCE
from esllm.evals.belebele_table import MODE_LABELS, MODES, run_mode, run_template
from esllm.paths import BELEBELE_DIR, ROOT, display_path
from esllm.store.models import EvalRun
from esllm.ui.context import AppContext, bind, handler

HEADERS = ["concursante", "archivo", "exactitud", "IC 95 %", "n", "fecha (UTC)", "base sha256", "adaptador sha256",
           "modo", "empates", "dtype"]
CHANCE_NOTE = (f"Azar: {CHANCE:.0%} (cuatro opciones). Puntuación por la probabilidad de la letra de cada opción, "
               f"sin muestreo; IC 95 % bootstrap sobre preguntas. {ACC_NOTE[0].upper() + ACC_NOTE[1:]}.")


def file_choices(data_dir: Path = BELEBELE_DIR) -> list[str]:
    """The .jsonl files under data_dir, as paths relative to the repository (the bundled sample first)."""
    files = sorted(data_dir.rglob("*.jsonl"), key=lambda p: (p.name != "muestra-es.jsonl", str(p)))
    return [display_path(p) for p in files if p.is_file()]


def resolve_file(value: Any, data_dir: Path = BELEBELE_DIR) -> Path:
    """The file an admin picked, if it is one of `file_choices`; else EsllmError."""
    if not isinstance(value, str) or not value.strip():
        raise EsllmError("Elija un archivo de Belebele.")
    p = Path(value.strip())
    p = (p if p.is_absolute() else ROOT / p).resolve()
    if not p.is_relative_to(data_dir.resolve()) or p.suffix != ".jsonl":
        raise EsllmError(f"Solo se evalúan archivos .jsonl de {display_path(data_dir)}/; copie allí el archivo.")
    if display_path(p) not in file_choices(data_dir):
        raise EsllmError(f"No existe el archivo {value.strip()!r} en {display_path(data_dir)}/.")
    return p


def _protocol(r: EvalRun) -> str:
    """The «modo» cell: the mode, and the lm-eval template when it is not the current one."""
    template = run_template(r)
    return run_mode(r) if template in (None, DEFAULT_TEMPLATE) else f"{run_mode(r)} ({template})"


def runs_table(s) -> list[list[Any]]:
    rows, seen = [], set()
    for r in s.scalars(select(EvalRun).where(EvalRun.kind == KIND, EvalRun.status == "done")
                       .order_by(EvalRun.id.desc())):  # the newest run per contestant, file and protocol
        if (key := (r.contestant, r.config.get("file"), _protocol(r))) in seen:
            continue
        seen.add(key)
        m, h = r.metrics, r.hashes
        rows.append([r.contestant, r.config.get("file"), f"{m['accuracy']:.1%}",
                     f"[{m['ci_low']:.1%}, {m['ci_high']:.1%}]", m["n"],
                     f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else "",
                     (h.get("base_sha256") or "—")[:12], (h.get("adapter_sha256") or "—")[:12], _protocol(r),
                     m.get("ties", 0), h.get("dtype") or "—"])
    return sorted(rows, key=lambda row: (row[1], row[8], row[0]))


def _table(ctx: AppContext) -> list[list[Any]]:
    with ctx.sessionmaker() as s:
        return runs_table(s)


@handler("admin")
def evaluate(ctx: AppContext, data_dir: Path, file_value: Any, names: Any, limit_value: Any, request: gr.Request,
             progress=gr.Progress(), mode: Any = "chat"):
    """«Evaluar» (/belebele_evaluar): (summary markdown, latest-runs table). `mode` (the last input): "chat" or
    "lm-eval" (esllm/evals/belebele_lmeval.py)."""
    if mode not in MODES:
        raise EsllmError(f"Elija un modo: {', '.join(MODES)}.")
    path = resolve_file(file_value, data_dir)
    names = [n for n in (names or []) if isinstance(n, str) and n]
    if not names:
        raise EsllmError("Elija al menos un concursante.")
    n_limit = int(limit_value or 0)
    if n_limit < 0:
        raise EsllmError("El límite de preguntas no puede ser negativo (0 = todas).")

    def report(done: int, total: int, msg: str) -> None:
        progress((done, total), desc=msg, unit="preguntas")

    evaluation = Belebele(path, limit=n_limit or None, mode=mode)
    runs = run_contestants(evaluation, ctx.sessionmaker, ctx.engine, names, progress=report)  # as the CLI
    lines = [f"**Belebele · modo {MODE_LABELS[mode]} · {display_path(path)} · {runs[0].config['n_items']} "
             f"preguntas.** {CHANCE_NOTE}"]
    for r in runs:
        if r.status == "done":
            m = r.metrics
            lines.append(f"- {r.contestant}: {m['accuracy']:.1%} [IC 95 % {m['ci_low']:.1%}–{m['ci_high']:.1%}],"
                         f" {m['correct']}/{m['n']}, {m.get('ties', 0)} empates")
        else:
            lines.append(f"- {r.contestant}: **falló**: {r.error}")
    return "\n".join(lines), _table(ctx)


@handler("admin")
def refresh_table(ctx: AppContext, request: gr.Request) -> list[list[Any]]:
    """«Actualizar tabla» (/belebele_tabla)."""
    return _table(ctx)


def load_belebele(ctx: AppContext, data_dir: Path, request: gr.Request):
    """Page load (never raises): for admins the files, every available contestant and the table."""
    if not ctx.is_admin(request):
        return gr.update(choices=[], value=None), gr.update(choices=[], value=[]), None
    files = file_choices(data_dir)
    names = ctx.engine.available()
    return (gr.update(choices=files, value=files[0] if files else None),
            gr.update(choices=names, value=names), _table(ctx))


def build_belebele(ctx: AppContext, *, data_dir: Optional[Path] = None):
    """The accordion; returns (load function, its outputs) for demo.load, like the tabs' builders."""
    data_dir = data_dir or BELEBELE_DIR
    with gr.Accordion("Belebele (comprensión lectora, opción múltiple)", open=False):
        gr.Markdown("Comprensión lectora en el formato de Belebele: pasaje, pregunta y cuatro opciones. La muestra "
                    "incluida es original (no es el Belebele real); para el real copie `spa_Latn.jsonl` en "
                    "`data/belebele/` (véase `data/belebele/LEEME.md`). " + CHANCE_NOTE)
        with gr.Row():
            file = gr.Dropdown([], value=None, label="Archivo", allow_custom_value=True, scale=2,
                               elem_id="belebele-archivo")
            who = gr.Dropdown([], value=[], multiselect=True, label="Concursantes", allow_custom_value=True, scale=3,
                              elem_id="belebele-concursantes")
            # no minimum: Gradio's refusal is in English; `evaluate` refuses a negative limit in Spanish
            limit = gr.Number(value=0, precision=0, label="Límite de preguntas (0 = todas)", scale=1)
            mode = gr.Radio([(MODE_LABELS[m], m) for m in MODES], value="chat", label="Modo", scale=2,
                            elem_id="belebele-modo")
        with gr.Row():
            go = gr.Button("Evaluar", variant="primary", elem_id="belebele-evaluar")
            refresh = gr.Button("Actualizar tabla", elem_id="belebele-actualizar")
        summary = gr.Markdown("", elem_id="belebele-resumen")
        table = gr.Dataframe(headers=HEADERS, value=None, interactive=False, wrap=True, elem_id="belebele-tabla",
                             label=f"Última evaluación por concursante y archivo · azar = {CHANCE:.0%}")

        go.click(bind(ctx, evaluate, data_dir), [file, who, limit, mode], [summary, table], api_name="belebele_evaluar",
                 concurrency_limit=1, concurrency_id="belebele")
        refresh.click(bind(ctx, refresh_table), None, table, api_name="belebele_tabla")
    return bind(ctx, load_belebele, data_dir), [file, who, table]
