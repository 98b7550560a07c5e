"""One evaluation shape (esllm/evals/base.py): the four evaluations implement `Evaluation`, have no command
line code, and the shared runner stores one eval_run per contestant, a failed contestant as a failed run
while the others finish. Model-free: tests.helpers.FakeEngine with canned replies, on the shared fresh store.

    .venv/bin/python -m pytest tests/test_evals_shape.py
"""

from __future__ import annotations

import importlib
import inspect
import random

import pytest
from sqlalchemy import select

from esllm import EsllmError
from esllm.evals import belebele, judge, pictos, questions
from esllm.evals.base import Evaluation, Outcome, failure_message, run_contestants
from esllm.evals.belebele import Belebele
from esllm.evals.judge import Judge
from esllm.evals.pictos import Pictos
from esllm.evals.question_checks import EXAMPLE_TEXT
from esllm.evals.questions import Questions
from esllm.store.models import EVAL_KINDS, EvalRun
from tests.helpers import ROWS, FakeEngine

QUESTIONS_REPLY = """1. [abierta] ¿Con quién fue Lucía al lago?
2. [abierta] ¿Qué llevaron para los patos?
3. [V/F] Lucía y su abuelo fueron al lago en autobús."""

def canned(*broken: str):
    """The contestants' reply for tests.helpers.FakeEngine: a grade for a judge's prompt, the reference-like
    sentence for pictograms, QUESTIONS_REPLY otherwise; a contestant in `broken` fails with RuntimeError."""
    def reply(name, messages):
        if name in broken:
            raise RuntimeError("sin memoria")
        last = messages[-1]["content"]
        if "[Respuesta a calificar]" in last:
            return "Calificación: 4"
        if last.startswith("Pictogramas: "):
            return last.removeprefix("Pictogramas: ").capitalize() + "."
        return QUESTIONS_REPLY
    return reply


@pytest.fixture()
def Session(store, monkeypatch):
    """The shared fresh store's session factory; the commands open the same store."""
    monkeypatch.setenv("ESLLM_DATABASE_URL", store.url)
    return store.Session


def stored(Session):
    with Session() as s:
        return [(r.kind, r.contestant, r.status) for r in s.scalars(select(EvalRun).order_by(EvalRun.id))]


# ---------------------------------------------------------------- the interface

EVALUATIONS = {"belebele": (belebele, Belebele), "judge": (judge, Judge), "questions": (questions, Questions),
               "pictos": (pictos, Pictos)}


def test_every_evaluation_implements_the_interface_and_has_no_cli_code():
    assert sorted(EVALUATIONS) == sorted(EVAL_KINDS)
    for kind, (module, cls) in EVALUATIONS.items():
        assert issubclass(cls, Evaluation) and cls.kind == kind
        assert not inspect.isabstract(cls)
        for method in ("load", "summary"):
            assert getattr(cls, method) is not getattr(Evaluation, method), (cls, method)
        # items per contestant: `evaluate` (storage written once, in the base); the judge stores its own run
        overrides = "run_one" if cls is Judge else "evaluate"
        assert getattr(cls, overrides) is not getattr(Evaluation, overrides), (cls, overrides)
        source = inspect.getsource(module)
        assert "argparse" not in source and "print(" not in source, module.__name__
        assert not hasattr(module, "add_cli") and not hasattr(module, "run_cli")
        assert "DESIGN.md" not in (module.__doc__ or "")
    # one runner: the UI and the CLI call run_contestants; no per-evaluation wrapper is left (issue 24)
    for module, name in ((belebele, "run_belebele"), (pictos, "run_pictos"), (questions, "run_questions"),
                         (judge, "grade_session")):
        assert not hasattr(module, name), name
    for ui in ("resultados_belebele", "resultados_juez", "resultados_tareas"):
        assert "run_contestants(" in inspect.getsource(importlib.import_module(f"esllm.ui.{ui}")), ui


def test_failure_message():
    assert failure_message(EsllmError("El archivo no existe.")) == "El archivo no existe."
    assert failure_message(RuntimeError("sin memoria")) == "RuntimeError: sin memoria"
    assert failure_message(KeyboardInterrupt()).startswith("KeyboardInterrupt")


# ---------------------------------------------------------------- the shared runner

def _belebele_outcome(monkeypatch):
    """Belebele without a model: its scoring function replaced (the real one is tested in test_belebele.py)."""
    def fake_evaluate(engine, contestant, items, *, batch_size, progress=None):
        engine.generate(contestant, [{"role": "user", "content": "belebele"}])  # fails for a broken one
        if progress:
            progress(len(items), len(items), contestant)
        n = len(items)
        return {"metrics": {"accuracy": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": n, "correct": n // 2},
                "details": [{"line": it.line, "ok": True} for it in items]}

    monkeypatch.setattr(belebele, "evaluate", fake_evaluate)


@pytest.mark.parametrize("kind", ["belebele", "pictos", "questions"])
def test_runner_stores_a_failed_contestant_and_the_others_finish(kind, Session, monkeypatch):
    if kind == "belebele":
        _belebele_outcome(monkeypatch)
    ev = {"belebele": lambda: Belebele(limit=3), "pictos": lambda: Pictos(pictos.SAMPLE),
          "questions": lambda: Questions(EXAMPLE_TEXT, 2, 1)}[kind]()
    items = ev.load()
    if kind == "pictos":
        items = items[:3]
    eng = FakeEngine(["a", "b", "c"], canned("b"))
    seen = []
    runs = run_contestants(ev, Session, eng, ["a", "b", "c", "a"], items, lambda d, t, m: seen.append((d, t)))
    assert [(r.contestant, r.status) for r in runs] == [("a", "done"), ("b", "failed"), ("c", "done")]
    assert runs[1].error == "RuntimeError: sin memoria" and runs[1].finished_at is not None
    assert stored(Session) == [(kind, "a", "done"), (kind, "b", "failed"), (kind, "c", "done")]
    assert seen and seen[-1][0] == seen[-1][1]
    with Session() as s:
        for r in runs:
            row = s.get(EvalRun, r.id)
            assert row.hashes == eng.hashes(r.contestant) and row.config == r.config and row.config
            assert (row.metrics != {}) == (r.status == "done")
    lines = [ev.summary(r) for r in runs]
    assert all("\n" not in line and r.contestant in line for line, r in zip(lines, runs))
    assert "FALLÓ" in lines[1] and "sin memoria" in lines[1] and "FALLÓ" not in lines[0] + lines[2]
    # names are checked before anything is stored
    with pytest.raises(EsllmError, match="No existe el concursante 'nadie'"):
        run_contestants(ev, Session, eng, ["a", "nadie"], items)
    with pytest.raises(EsllmError, match="al menos un concursante"):
        run_contestants(ev, Session, eng, [], items)
    assert len(stored(Session)) == 3


@pytest.mark.parametrize("kind", ["belebele", "pictos", "questions"])
def test_resume_keeps_finished_runs_and_runs_again_the_failed_one(kind, Session, monkeypatch):
    """A run of several contestants that stopped or partly failed goes on where it stopped: --resume keeps a
    contestant's finished run of the same configuration on the same model, and runs the others."""
    if kind == "belebele":
        _belebele_outcome(monkeypatch)
    make = {"belebele": lambda **kw: Belebele(limit=3, **kw), "pictos": lambda **kw: Pictos(pictos.SAMPLE, **kw),
            "questions": lambda **kw: Questions(EXAMPLE_TEXT, 2, 1)}[kind]
    ev = make()
    items = ev.load()[:3]
    broken = FakeEngine(["a", "b"], canned("b"))
    first = run_contestants(ev, Session, broken, ["a", "b"], items)
    assert [r.status for r in first] == ["done", "failed"]
    fixed = FakeEngine(["a", "b"], canned())
    again = run_contestants(ev, Session, fixed, ["a", "b"], items, resume=True)
    assert again[0].id == first[0].id, "a's finished run is kept"
    assert again[1].id != first[1].id and again[1].status == "done"
    assert len(fixed.calls) < len(broken.calls), "only b was asked again"
    assert len(stored(Session)) == 3
    rerun = run_contestants(ev, Session, fixed, ["a"], items)  # without resume: a new run
    assert rerun[0].id not in {r.id for r in first + again}


def test_run_one_on_an_open_session_raises_after_storing_the_failure(Session):
    ev = Pictos(pictos.SAMPLE)
    items = ev.load()[:2]
    eng = FakeEngine(["a", "b"], canned("b"))
    with Session() as s:
        assert ev.run_one(s, eng, "a", items).status == "done"
        with pytest.raises(RuntimeError, match="sin memoria"):
            ev.run_one(s, eng, "b", items)
        assert ev.run_one(s, eng, "b", items, raise_errors=False).status == "failed"
    assert stored(Session) == [("pictos", "a", "done"), ("pictos", "b", "failed"), ("pictos", "b", "failed")]


def test_the_items_are_loaded_when_not_given(Session):
    eng = FakeEngine(["a"], canned())
    [run] = run_contestants(Questions(EXAMPLE_TEXT, 2, 1), Session, eng, ["a"])
    assert run.status == "done" and run.config["n_open"] == 2
    with pytest.raises(EsllmError, match="entre 0 y 10"):
        run_contestants(Questions(EXAMPLE_TEXT, 11, 1), Session, eng, ["a"])
    assert stored(Session) == [("questions", "a", "done")]


class Echo(Evaluation):
    """The smallest evaluation: each item's text back, scored by length."""

    kind = "questions"

    def load(self, store=None):
        return ["uno", "dos", "tres"]

    def evaluate(self, engine, contestant, items, progress=None):
        return Outcome(metrics={"n": len(items)}, details=[{"item": it} for it in items], config={"echo": True})

    def summary(self, run):
        return f"{run.contestant}: {run.metrics.get('n')}"


def test_a_new_evaluation_is_a_few_lines(Session):
    [run] = run_contestants(Echo(), Session, FakeEngine(["a"], canned()), ["a"])
    assert (run.status, run.metrics, run.config, len(run.details)) == ("done", {"n": 3}, {"echo": True}, 3)
    assert Echo().summary(run) == "a: 3"


# ---------------------------------------------------------------- the judge

NAMES = ["modelo-uno", "modelo-dos", "modelo-tres"]


@pytest.fixture()
def rating_session(Session):
    """A rating session over the four-prompt set with answers of three fake contestants."""
    from esllm.store import users
    from esllm.store.models import ContestantSnapshot
    from esllm.study.answers import generate_answers
    from esllm.study.prompts import import_prompt_set, parse_prompts
    from esllm.study.sessions import create_session

    with Session() as s:
        import_prompt_set(s, "mini", parse_prompts(ROWS, "jsonl"))
        for n in ("ana", "beto"):
            users.add_user(s, n, "contraseña-segura", "rater")
        s.commit()
    rep = generate_answers(Session, FakeEngine(NAMES, canned()), "mini", NAMES, attempts=1)
    assert not rep.errors
    with Session() as s:
        ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
        create_session(s, name="sesion-1", prompt_set="mini", contestant_ids=ids, raters=["ana", "beto"], k=2,
                       rng=random.Random(5))
        s.commit()
    return Session


def test_judges_through_the_shared_runner(rating_session):
    Session = rating_session
    ev = Judge("sesion-1")
    items = ev.load(Session)
    assert len(items) == 4 and len(items.names) == 3
    eng = FakeEngine(["juez", "juez-roto"], canned("juez-roto"))
    runs = run_contestants(ev, Session, eng, ["juez-roto", "juez"], items)
    assert [(r.contestant, r.status) for r in runs] == [("juez-roto", "failed"), ("juez", "done")]
    assert runs[0].error == "RuntimeError: sin memoria"
    assert (runs[1].metrics["graded"], runs[1].metrics["total"], runs[1].metrics["judge_scores"]) == (12, 12, 12)
    assert stored(Session) == [("judge", "juez-roto", "failed"), ("judge", "juez", "done")]
    assert ev.summary(runs[1]).startswith(f"Ejecución {runs[1].id}: 12 calificadas, 0 sin calificación legible")
    assert "FALLÓ" in ev.summary(runs[0]) and "\n" not in ev.summary(runs[0])
    # a second run resumes: nothing left to grade for this judge
    [again] = run_contestants(ev, Session, eng, ["juez"], items)
    assert (again.status, again.metrics["graded"], again.metrics["skipped"]) == ("done", 0, 12)
    with pytest.raises(EsllmError, match="No existe la sesión"):
        Judge("no-hay").load(Session)
    with pytest.raises(EsllmError, match="Criterio"):
        Judge("sesion-1", criterion="belleza")


# ---------------------------------------------------------------- the commands over the same shape

def test_commands_report_failed_contestants_and_judge_runs(rating_session, monkeypatch, capsys):
    from esllm.cli import evals as cli_evals
    from esllm.cli import main

    Session = rating_session
    eng = FakeEngine(["a", "b", "juez"], canned("b"))
    monkeypatch.setattr(cli_evals, "start_engine", lambda config: eng)
    assert main(["pictos", "--contestants", "a", "b", "--limit", "2"]) == 1
    out, err = capsys.readouterr()
    assert [ln.split()[0] for ln in out.splitlines() if ln.startswith(("a ", "b "))] == ["a"]
    assert "2 ítems" in out and "BLEU: " in out and "error en b: RuntimeError: sin memoria" in err
    assert main(["judge", "--session", "sesion-1", "--judge", "juez"]) == 0
    out = capsys.readouterr().out.splitlines()
    with Session() as s:
        run_id = max(s.scalars(select(EvalRun.id)))
    assert out == [f"Ejecución {run_id}: 12 calificadas, 0 sin calificación legible, 0 errores, 0 ya estaban (de 12)",
                   "Acuerdo con los humanos sobre 0 unidades (0 pares): exacto —, ±1 —, Spearman —, alfa ordinal "
                   "con el juez — (solo humanos —)"]
    assert stored(Session) == [("pictos", "a", "done"), ("pictos", "b", "failed"), ("judge", "juez", "done")]
