"""«Resultados» › «Tablas del estudio» over a real store: a rated session gives the thesis's table (labels, set
order, Promedio), the CI view beside it, the judge's table in the same layout with the agreement figures, and the
files (wide CSV, Markdown, LaTeX)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from esllm import EsllmError
from esllm.evals.judge import Judge
from esllm.store.models import Assignment, ContestantSnapshot, User
from esllm.study import admin
from esllm.study.answers import generate_answers
from esllm.study.sessions import next_item, submit
from esllm.ui.resultados_tablas import _files, study_tables
from tests.helpers import ROWS, FakeEngine, new_store

NAMES = ["x", "y", "z"]
SCORE = {"x": 3, "y": 4, "z": 5}


@pytest.fixture()
def rated(tmp_path):
    store = new_store(tmp_path / "t.sqlite3", prompt_sets={"mini": ROWS}, accounts={"ana": "rater", "beto": "rater"})
    S = store.Session
    generate_answers(S, FakeEngine(NAMES), "mini", NAMES, attempts=1)
    with S() as s:
        admin.create_named_session(s, name="piloto", set_name="mini", contestants=NAMES, raters=["ana", "beto"], k=2)
        s.commit()
        names = {c.id: c.name for c in s.scalars(select(ContestantSnapshot))}
        sid = s.scalars(select(Assignment.session_id)).first()
        for rater in ("ana", "beto"):
            rid = s.scalar(select(User.id).where(User.name == rater))
            while (item := next_item(s, sid, rid)) is not None:
                a = s.get(Assignment, item.assignment_id)
                submit(s, rater_id=rid, assignment_id=a.id,
                       scores={label: {"general": SCORE[names[cid]]} for label, cid in a.permutation.items()})
                s.commit()
    yield S
    store.dispose()


def test_session_tables_judge_and_files(rated):
    judge = FakeEngine(NAMES + ["juez"], reply=lambda name, msgs: "4")
    Judge("piloto").grade(rated, judge, "juez")
    with rated() as s:
        r = study_tables(s, "Sesión", "piloto")
    plain, ci = r["grids"]["tabla_estudio"], r["grids"]["tabla_estudio_ic"]
    assert plain.rows == ["Básicas", "Contextual", "Promedio"] and plain.columns == NAMES
    assert [plain.text("Promedio", n) for n in NAMES] == ["3.00", "4.00", "5.00"]
    assert ci.text("Básicas", "y") == "4.00 [4.00–4.00] n=2"
    j, = r["judges"]
    assert j.rows == plain.rows and j.columns == NAMES and {j.text(row, n) for row in j.rows for n in NAMES} == {"4.00"}
    (name, n, exact, within, _rho, _alpha), = r["agreement"]
    assert name.startswith("juez") and n == 12 and exact == "33.3" and within == "100.0"
    files = _files(r["grids"])
    assert sorted(p.rsplit("esllm-export-", 1)[1] for p in files) == sorted(
        f"{stem}.{ext}" for stem in ("tabla_estudio", "tabla_estudio_ic", "tabla_juez-juez")
        for ext in ("csv", "md", "tex"))


def test_the_studys_judge_prompt_is_sent_verbatim_and_grades_apart(rated):
    from esllm.evals.judge_prompt import STUDY_PROMPT

    seen = []

    def reply(name, msgs):
        seen.append(msgs)
        return "5" if "I need your help" in msgs[-1]["content"] else "4"

    judge = FakeEngine(NAMES + ["juez"], reply=reply)
    Judge("piloto").grade(rated, judge, "juez")
    Judge("piloto", prompt="estudio").grade(rated, judge, "juez")
    study = [m for m in seen if len(m) == 1]
    assert len(study) == 12 and all(m[0]["role"] == "user" for m in study)
    assert study[0][0]["content"] == STUDY_PROMPT.format(instruction="¿Qué es el RUC?", answer=study[0][0]["content"]
                                                         .split('the answer obtained was "')[1].split('". In the')[0])
    assert study[0][0]["content"].startswith("I need your help grading an answer to an instruction given to a Large "
                                             'Language Model chatbot. The instruction was written in Spanish')
    with rated() as s:
        r = study_tables(s, "Sesión", "piloto")
    assert [j.title for j in r["judges"]] == ["piloto · juez-estudio-juez", "piloto · juez-juez"]
    assert r["judges"][0].text("Promedio", "x") == "5.00" and r["judges"][1].text("Promedio", "x") == "4.00"
    assert [row[0] for row in r["agreement"]] == ["juez-estudio-juez", "juez-juez"]
    with pytest.raises(EsllmError, match="solo pide una calificación general"):
        Judge("piloto", prompt="estudio", criterion="exactitud").grade(rated, judge, "juez")


def test_set_scope_and_empty(rated, tmp_path):
    with rated() as s:
        r = study_tables(s, "Conjunto de prompts", "mini")
        assert r["grids"]["tabla_conjunto"].text("Contextual", "z") == "5.00"
        with pytest.raises(EsllmError, match="No existe el conjunto"):
            study_tables(s, "Conjunto de prompts", "nada")
