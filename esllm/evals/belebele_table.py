"""The study's Table 5 from stored Belebele runs: rows "Sin LoRA" / "Con LoRA" (or one per adapter), columns =
base models, cells = accuracy %.

    grid = belebele_grid(s, mode="lm-eval")        # esllm.study.tables.Grid; EsllmError if no run in that mode
    python -m esllm export --belebele lm-eval --out DIR

Each contestant's newest finished run in the mode counts; runs of the other mode never (a run stored before modes
existed is a "chat" run: it went through the chat template). Runs over other files, or with another lm-eval template
(`run_template`; a lm-eval run stored before templates were named used the pre-0.4.4 one), than the newest run's in
that mode are left out too, so one table is one benchmark file, one protocol. The cells are accuracy, lm-eval's
`acc` (its `acc_norm` equals it on Belebele: every choice is one letter).
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.models import EvalRun
from esllm.study.tables import BelebeleRun, Grid, belebele_table

MODES = ("lm-eval", "chat")
MODE_LABELS = {"lm-eval": "lm-eval (sin plantilla, comparable con lm-evaluation-harness)",
               "chat": "chat (plantilla de cada concursante)"}


def run_mode(run: EvalRun) -> str:
    return (run.config or {}).get("mode") or "chat"


def run_template(run: EvalRun) -> Optional[str]:
    """The lm-eval template of a lm-eval run (runs stored before issue 30 ended with the full-width colon)."""
    if run_mode(run) != "lm-eval":
        return None
    return (run.config or {}).get("template") or "lm-eval-pre-0.4.4"


def stored_runs(s: Session, mode: str, file_sha256: Optional[str] = None) -> list[BelebeleRun]:
    """The newest finished run of each contestant in `mode` over one file (`file_sha256`, default: the file of the
    newest run in that mode), as table rows, in the order the contestants were first run."""
    if mode not in MODES:
        raise EsllmError(f"Modo de Belebele desconocido {mode!r}; use uno de {', '.join(MODES)}.")
    runs = [r for r in s.scalars(select(EvalRun).where(EvalRun.kind == "belebele", EvalRun.status == "done")
                                 .order_by(EvalRun.id.desc())) if run_mode(r) == mode]
    if not runs:
        return []
    sha = file_sha256 or runs[0].config.get("file_sha256")
    template = run_template(runs[0])
    newest: dict[str, EvalRun] = {}
    for r in runs:
        if r.config.get("file_sha256") == sha and run_template(r) == template and r.contestant not in newest:
            newest[r.contestant] = r
    ordered = sorted(newest.values(), key=lambda r: r.id)
    return [BelebeleRun(contestant=r.contestant, base=str(r.hashes.get("base") or "?"), adapter=r.hashes.get("adapter"),
                        accuracy=float(r.metrics["accuracy"]), n=int(r.metrics.get("n", 0)), mode=mode,
                        file=str(r.config.get("file", ""))) for r in ordered]


def belebele_grid(s: Session, mode: str) -> Grid:
    runs = stored_runs(s, mode)
    if not runs:
        raise EsllmError(f"No hay ejecuciones de Belebele en modo {mode}: ejecútelas con "
                         f"python -m esllm belebele --mode {mode}")
    return belebele_table(runs, mode=mode, title=f"Belebele ({MODE_LABELS[mode]})")
