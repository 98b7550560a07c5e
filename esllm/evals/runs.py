"""Bookkeeping of automatic evaluations: every run is an `eval_run` row with what is needed to trace and
repeat it (configuration, input file sha256, base and adapter hashes, times), its summary metrics and its
per-item details.

    run = start_run(s, "belebele", contestant, config={...}, hashes=engine.hashes(contestant))
    s.commit()                                   # visible as "running" while it works
    ...
    finish_run(s, run, metrics={...}, details=[...]); s.commit()
    # or fail_run(s, run, "what went wrong"); s.commit()
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.store.base import utcnow
from esllm.store.models import EVAL_KINDS, EvalRun


def start_run(s: Session, kind: str, contestant: str, *, config: dict[str, Any], hashes: dict[str, Any]) -> EvalRun:
    """A new run in status "running" (flushed, not committed)."""
    if kind not in EVAL_KINDS:
        raise EsllmError(f"Tipo de evaluación desconocido {kind!r}; use uno de {', '.join(EVAL_KINDS)}.")
    run = EvalRun(kind=kind, contestant=contestant, config=dict(config), hashes=dict(hashes), status="running",
                  metrics={}, details=[])
    s.add(run)
    s.flush()
    return run


def finish_run(s: Session, run: EvalRun, *, metrics: dict[str, Any], details: Sequence[Any] = ()) -> EvalRun:
    run.metrics, run.details, run.status, run.finished_at = dict(metrics), list(details), "done", utcnow()
    s.flush()
    return run


def fail_run(s: Session, run: EvalRun, error: str) -> EvalRun:
    run.status, run.error, run.finished_at = "failed", str(error)[:4000], utcnow()
    s.flush()
    return run


def latest_runs(s: Session, kind: str, *, config_key: Optional[str] = None) -> list[EvalRun]:
    """The newest finished run of `kind` per contestant (per contestant and `config[config_key]`, if
    given, e.g. the input file), newest first."""
    seen, out = set(), []
    for run in s.scalars(select(EvalRun).where(EvalRun.kind == kind, EvalRun.status == "done")
                         .order_by(EvalRun.id.desc())):
        key = (run.contestant, run.config.get(config_key) if config_key else None)
        if key not in seen:
            seen.add(key)
            out.append(run)
    return out
