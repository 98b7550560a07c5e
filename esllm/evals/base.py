"""One shape for every automatic evaluation: load the items, run one contestant with progress, store the
run as an `eval_run` row (esllm/evals/runs.py), say it in one Spanish line.

    ev = Belebele(file, batch_size=8, limit=100)   # what every contestant's run shares
    items = ev.load()                              # validated; EsllmError listing every bad line
    runs = run_contestants(ev, Session, engine, ["gemma-base", "gemma-a1"], items, progress)
    lines = [ev.summary(run) for run in runs]     # one per run, "done" or "failed" (with the error)

An evaluation is a subclass of `Evaluation` with a `kind` (the eval_run kind) and four methods:
`load` (the items), `config` (what the stored run records to be repeated: input file and sha256,
prompt version, parameters), `evaluate` (one contestant over the items: metrics, per-item details and
what was learned while running, such as the generation parameters) and `summary`. Written once here:
`run_one` stores one contestant's run (running → done | failed) around `evaluate`, and
`run_contestants` runs several: every name is checked before anything is stored, and a contestant
whose run fails is stored as failed with its error while the others still run. The judge model grades
a rating session with a commit per item, so it overrides `run_one` instead (esllm/evals/judge.py).
`run_contestants` is the one entry point: the CLI (esllm/cli/evals.py) and «Resultados» (esllm/ui/resultados_*.py)
build the evaluation from their inputs and call it with the same arguments.

`store` is a session factory (a sessionmaker: one short session for each write, none held while the
model works) or an open Session (used as is and left open; the UI and the tests pass theirs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from esllm import EsllmError
from esllm.evals.runs import fail_run, finish_run, start_run
from esllm.store.models import EvalRun

Progress = Callable[[int, int, str], None]  # (done, total, message)


@dataclass
class Outcome:
    """What `evaluate` found for one contestant."""

    metrics: dict[str, Any]  # the summary, EvalRun.metrics
    details: list[Any]  # one record per item, EvalRun.details
    config: dict[str, Any] = field(default_factory=dict)  # learned while running; added to EvalRun.config


def session_scope(store):
    """A context manager giving a Session: a new one from a session factory (closed at the end), or the
    open Session `store` itself (left open)."""
    return nullcontext(store) if isinstance(store, Session) else store()


def failure_message(e: BaseException) -> str:
    """What a failed run stores as its error: an EsllmError's own (Spanish) message, else "Type: message"."""
    msg = str(e) if isinstance(e, EsllmError) else f"{type(e).__name__}: {e}"
    return msg or type(e).__name__


class Evaluation(ABC):
    """One automatic evaluation with its settings (input file, limit, preset…); see the module docstring."""

    kind: ClassVar[str]  # one of esllm.store.models.EVAL_KINDS

    @abstractmethod
    def load(self, store=None) -> Sequence[Any]:
        """The items, validated: EsllmError (Spanish) listing every bad line, and then nothing is loaded.
        `store` is only read by evaluations whose items are in the database (the judge)."""

    def config(self, items: Sequence[Any]) -> dict[str, Any]:
        """EvalRun.config of a run over `items` (before it starts); EsllmError if they cannot be run."""
        return {}

    def evaluate(self, engine, contestant: str, items: Sequence[Any],
                 progress: Optional[Progress] = None) -> Outcome:
        """Run one contestant over the items (no database)."""
        raise NotImplementedError(f"{type(self).__name__} stores its runs itself (run_one)")

    @abstractmethod
    def summary(self, run) -> str:
        """One Spanish line about a stored run, failed ones included."""

    def run_one(self, store, engine, contestant: str, items: Sequence[Any], progress: Optional[Progress] = None,
                *, raise_errors: bool = True):
        """Evaluate one contestant and store its EvalRun: "running" (committed) while it works, then "done"
        with the metrics and details, or "failed" with the error, which is raised again, or, with
        `raise_errors=False`, returned as the failed run (KeyboardInterrupt and the like always stop).
        An unknown or unavailable contestant and items that cannot be run stop before anything is stored."""
        engine.contestant(contestant)
        config = self.config(items)
        with session_scope(store) as s:
            run = start_run(s, self.kind, contestant, config=config, hashes=engine.hashes(contestant))
            s.commit()
            run_id = run.id
        try:
            out = self.evaluate(engine, contestant, items, progress)
        except BaseException as e:
            with session_scope(store) as s:
                run = fail_run(s, s.get(EvalRun, run_id), failure_message(e))
                s.commit()
            if raise_errors or not isinstance(e, Exception):
                raise
            return run
        with session_scope(store) as s:
            run = s.get(EvalRun, run_id)
            if out.config:
                run.config = {**run.config, **out.config}
            finish_run(s, run, metrics=out.metrics, details=out.details)
            s.commit()
        return run


def finished_run(store, kind: str, contestant: str, config: dict[str, Any], hashes: dict[str, Any]):
    """The newest finished run of `kind` by `contestant` with exactly this configuration (input file and its sha256,
    parameters) on exactly this model (base, adapter and their sha256, template, dtype), or None."""
    with session_scope(store) as s:
        runs = s.scalars(select(EvalRun).where(EvalRun.kind == kind, EvalRun.contestant == contestant,
                                               EvalRun.status == "done").order_by(EvalRun.id.desc()))
        # a finished run's config also holds what it learned while running (generation parameters): compare what
        # it started with
        return next((r for r in runs if all(r.config.get(k) == v for k, v in config.items()) and r.hashes == hashes),
                    None)


def run_contestants(evaluation: Evaluation, store, engine, contestants: Sequence[str],
                    items: Optional[Sequence[Any]] = None, progress: Optional[Progress] = None, *,
                    resume: bool = False) -> list:
    """One stored run per contestant (each name once, in the order given), as `run_one`; the items are
    loaded first when not given. Every name is checked before anything is stored; a contestant whose run
    fails is stored as failed and the others still run. `resume`: a contestant that already has a finished run of
    the same configuration on the same model keeps it (a stopped or partly failed run of several contestants goes
    on where it stopped). Returns the EvalRun rows, failed ones included."""
    names = list(dict.fromkeys(contestants))
    if not names:
        raise EsllmError("Elija al menos un concursante.")
    if items is None:
        items = evaluation.load(store)
    for name in names:
        engine.contestant(name)  # unknown or unavailable: EsllmError before anything is stored
    config = evaluation.config(items) if resume else {}
    return [(resume and finished_run(store, evaluation.kind, name, config, engine.hashes(name)))
            or evaluation.run_one(store, engine, name, items, progress, raise_errors=False) for name in names]
