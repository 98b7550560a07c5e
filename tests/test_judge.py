"""Judge model (esllm/evals/judge.py, judge_prompt.py, agreement.py, ui/resultados_juez.py): reading grades out
of replies, agreement figures against a hand computation, grading a rated session with a fake judge
(stored like a rater's but apart from the humans, unparsable replies never guessed, resumable), the
judge's user cannot log in, and the UI refuses anyone but an admin."""

from __future__ import annotations

import argparse
import math
import random
from types import SimpleNamespace

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.evals.agreement import judge_agreement, spearman
from esllm.evals.judge import Judge, judge_user_name
from esllm.evals.judge_ask import ask_grade
from esllm.evals.judge_prompt import REMINDER, grading_messages, parse_grade, strip_echo
from esllm.store import users
from esllm.store.models import Answer, Assignment, ContestantSnapshot, EvalRun, Prompt, Score, SessionRater, User
from esllm.study.answers import generate_answers
from esllm.study.results import progress_by_rater, pseudonyms, session_scores_frame
from esllm.study.sessions import create_session, next_item, submit
from tests.helpers import ROWS, FakeEngine, new_store

NAMES = ["modelo-uno", "modelo-dos", "modelo-tres"]


# ---------------------------------------------------------------- parse_grade

@pytest.mark.parametrize("reply, grade", [
    ("4", 4), (" 4.", 4), ("**4**", 4), ("Calificación: 4/5", 4), ("Puntuación: 4 de 5", 4),
    ("Nota final: 4", 4), ("cuatro", 4), ("Cuatro.", 4), ("4 - bueno", 4), ("4 (bueno)", 4),
    ("La respuesta merece un 4 porque cumple con 3 de los 4 aspectos.", 4), ("5/5", 5), ("1", 1),
    ("Calificación (1-5): 3", 3), ("En una escala del 1 al 5, le doy un 2.", 2),
    ("Calificación: 4\n\nExplicación: tiene 2 errores menores.", 4), ("La respuesta es un 3.", 3),
    ("`2`", 2), ("PUNTUACIÓN: CINCO", 5),
])
def test_parse_grade_reads_varied_replies(reply, grade):
    assert parse_grade(reply) == grade


@pytest.mark.parametrize("reply", [
    "", "   ", "No sé.", "La respuesta es buena.", "7", "0", "10", "Calificación: 7", "8/10",
    "entre 3 y 4", "3 o 4", "3-4", "Nota: 3. Nota final: 4", "3 4", "4.5", "4,5",
    "1. Exactitud: 4\n2. Relevancia: 3", "3 porque tiene dos errores", None,
])
def test_parse_grade_never_guesses(reply):
    assert parse_grade(reply) is None


def test_grading_prompt_names_the_criterion_and_fits_the_limit():
    general = grading_messages("¿Qué es el IVA?", "Un impuesto.", "general")
    assert [m["role"] for m in general] == ["system", "user"]
    assert "5 = perfecto" in general[0]["content"] and "general" in general[1]["content"]
    aspect = grading_messages("¿Qué es el IVA?", "Un impuesto.", "coherencia")
    assert "Califica solo la coherencia" in aspect[0]["content"]
    long = grading_messages("Pregunta", "x" * 9000, "general", [("antes " * 300, "y" * 3000)] * 3, max_chars=2500)
    assert len(long[1]["content"]) <= 2500 and "[…]" in long[1]["content"]
    with pytest.raises(EsllmError):
        grading_messages("p" * 5000, "r", "general", max_chars=300)
    with pytest.raises(EsllmError):
        grading_messages("p", "r", "belleza")


def test_a_copy_of_the_prompt_is_no_grade():
    """A small base model copies the prompt back; digits in the copied rubric or answer are not grades."""
    msgs = grading_messages("¿Cuántos tipos de IVA hay?", "Hay 3 tipos de IVA en Ecuador.", "general")
    system, user = msgs[0]["content"], msgs[1]["content"]
    assert parse_grade(user) == 3  # read raw, the copied answer's "3" would pass for a grade
    assert parse_grade(strip_echo(user, msgs)) is None
    rubric_line = system.splitlines()[-4][:30]  # "5 = perfecto: totalmente corre", cut by the token limit
    assert parse_grade(rubric_line) == 5 and strip_echo(user + "\n" + rubric_line, msgs).strip() == ""
    assert parse_grade(strip_echo(user + "\n\n4", msgs)) == 4
    assert strip_echo("Cuatro.", msgs) == "Cuatro."

    class Echo:
        def __init__(self):
            self.calls = []

        def generate(self, name, messages, preset=None, overrides=None):
            self.calls.append(messages)
            text = messages[-1]["content"] + ("\n2" if len(self.calls) == 2 else "")
            return SimpleNamespace(text=text)

    eng = Echo()
    assert ask_grade(eng, "juez", msgs, retries=2) == (2, [c[-1]["content"] + ("\n2" if i == 1 else "")
                                                           for i, c in enumerate(eng.calls)])
    assert ask_grade(Echo(), "juez", msgs, retries=0)[0] is None


def test_judge_user_names():
    assert judge_user_name("gemma-instrucciones") == "juez-gemma-instrucciones"
    odd = judge_user_name("Gemma Básico/Ñandú")
    assert odd.startswith("juez-gemma-basico-nandu-") and odd == odd.lower()
    long = judge_user_name("m" * 80)
    assert len(long) <= 40 and long != judge_user_name("m" * 81)
    assert users.NAME_RE.fullmatch(long) and users.NAME_RE.fullmatch(odd)


# ---------------------------------------------------------------- agreement, by hand

def _frame(rows):
    return pd.DataFrame(rows, columns=["item", "category", "contestant", "rater", "criterion", "value"])


HUMANS = _frame([
    ("p1", "basicas", "X", "h1", "general", 4), ("p1", "basicas", "X", "h2", "general", 5),
    ("p1", "basicas", "Y", "h1", "general", 2), ("p1", "basicas", "Y", "h2", "general", 2),
    ("p2", "basicas", "X", "h1", "general", 3),
    ("p2", "basicas", "Y", "h1", "general", 1), ("p2", "basicas", "Y", "h2", "general", 2),
    ("p3", "complejas", "X", "h1", "general", 5), ("p3", "complejas", "X", "h2", "general", 5),  # no judge: out
    ("p1", "basicas", "X", "h1", "exactitud", 1),  # a criterion the judge did not score: out
])
JUDGE = _frame([
    ("p1", "basicas", "X", "juez", "general", 4), ("p1", "basicas", "Y", "juez", "general", 4),
    ("p2", "basicas", "X", "juez", "general", 5), ("p2", "basicas", "Y", "juez", "general", 1),
    ("p3", "complejas", "Y", "juez", "general", 2),  # no human: out
])


def test_agreement_equals_hand_computation():
    ag = judge_agreement(HUMANS, JUDGE)
    # Units (p1,X) (p1,Y) (p2,X) (p2,Y): n = 4. Pairs judge-human: (4,4) (4,5) | (4,2) (4,2) | (5,3) | (1,1) (1,2).
    assert (ag.n, ag.pairs) == (4, 7)
    assert ag.exact == pytest.approx(100 * 2 / 7)  # (4,4) and (1,1)
    assert ag.within_one == pytest.approx(100 * 4 / 7)  # + (4,5) and (1,2)
    # Human means 4.5, 2, 3, 1.5 -> ranks 4, 2, 3, 1; judge 4, 4, 5, 1 -> ranks 2.5, 2.5, 4, 1 (a tie).
    # Deviations from 2.5: (1.5, -.5, .5, -1.5) and (0, 0, 1.5, -1.5): r = 3 / sqrt(5 * 4.5) = sqrt(0.4).
    assert ag.spearman == pytest.approx(math.sqrt(0.4))
    # Alpha with the judge as a coder: units {4,5,4} {2,2,4} {3,5} {1,2,1}; coincidences o11=o12=o21=o22=
    # o24=o42=o35=o53=o44=o45=o54=1; marginals n1..n5 = 2,3,1,3,2 (n = 11). Ordinal delta^2:
    # (1,2) 6.25 (1,3) 20.25 (1,4) 42.25 (1,5) 81 (2,3) 4 (2,4) 16 (2,5) 42.25 (3,4) 4 (3,5) 20.25 (4,5) 6.25.
    # Observed sum o*d2 = 2*6.25 + 2*16 + 2*20.25 + 2*6.25 = 97.5; expected sum n_c n_k d2 = 2 * 1155 = 2310.
    # alpha = 1 - (11 - 1) * 97.5 / 2310 = 89/154.
    assert ag.alpha == pytest.approx(89 / 154)
    # Humans alone on the same units: {4,5} {2,2} {3} {1,2}: n1,n2,n4,n5 = 1,3,1,1 (n = 6), observed 2*4 + 2*1 = 10,
    # expected 2 * (12 + 16 + 25 + 12 + 27 + 1) = 186: alpha = 1 - 5 * 10 / 186 = 68/93.
    assert ag.alpha_humans == pytest.approx(68 / 93)
    # the same alpha from the krippendorff package (coders x units, NaN where a coder did not score)
    data = np.array([[4, 2, 3, 1], [5, 2, np.nan, 2], [4, 4, 5, 1]], dtype=float)
    assert ag.alpha == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))
    assert ag.alpha_humans == pytest.approx(
        krippendorff.alpha(reliability_data=data[:2], level_of_measurement="ordinal"))


def test_agreement_edge_cases():
    only_aspect = judge_agreement(HUMANS, JUDGE, criterion="exactitud")
    assert only_aspect.n == 0 and math.isnan(only_aspect.exact) and math.isnan(only_aspect.alpha)
    assert math.isnan(spearman([1, 2, 3], [2, 2, 2])) and math.isnan(spearman([1], [1]))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1)
    two = pd.concat([JUDGE, JUDGE.assign(rater="otro")])
    with pytest.raises(ValueError, match="several raters"):
        judge_agreement(HUMANS, two)
    # category-typed columns (what session_scores_frame returns) give the same figures
    cat = HUMANS.astype({c: "category" for c in ("item", "category", "contestant", "rater", "criterion")})
    assert judge_agreement(cat, JUDGE) == judge_agreement(HUMANS, JUDGE)


# ---------------------------------------------------------------- grading a session with a fake judge

def JudgeEngine(reply) -> FakeEngine:
    """The shared FakeEngine as a judge «juez» (and «apagado», unavailable) whose canned replies come from
    `reply(answer_text, reminded) -> str`; records every request."""

    def text(name, messages):
        user = messages[-1]["content"]
        answer = user.split("[Respuesta a calificar]\n", 1)[1].split("\n\n[Calificación", 1)[0]
        return reply(answer, REMINDER in user)

    return FakeEngine(["juez", "apagado"], text, unavailable=["apagado"])


HUMAN_VALUE = {"modelo-uno": 4, "modelo-dos": 3, "modelo-tres": 2}


@pytest.fixture()
def rated(backend):
    """(sessionmaker, session id, {answer text: (item, contestant)}): a session over the 4 mini items (one
    series of two turns), k = 2, every human rater done (value by contestant; beto gives one more point).
    On SQLite and on PostgreSQL (the `backend` fixture)."""
    S = new_store(backend.new_url(at_head=True), accounts={"ana": "rater", "beto": "rater", "carla": "rater", "jefa": "admin"},
                  prompt_sets={"mini": ROWS}).Session
    generate_answers(S, FakeEngine(NAMES), "mini", NAMES, attempts=1)
    with S() as s:
        ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
        sid = create_session(s, name="sesion-1", prompt_set="mini", contestant_ids=ids,
                             raters=["ana", "beto", "carla"], k=2, rng=random.Random(5)).id
        s.commit()
        cname = {c.id: c.name for c in s.scalars(select(ContestantSnapshot))}
        for rname in ("ana", "beto", "carla"):
            rid = s.scalar(select(User.id).where(User.name == rname))
            while (item := next_item(s, sid, rid)) is not None:
                perm = s.get(Assignment, item.assignment_id).permutation
                scores = {lb: {"general": min(5, HUMAN_VALUE[cname[perm[lb]]] + (rname == "beto"))} for lb in "ABC"}
                submit(s, rater_id=rid, assignment_id=item.assignment_id, scores=scores)
                s.commit()
        who = {a.text: (p.external_id, cname[a.contestant_id]) for a, p in s.execute(
            select(Answer, Prompt).join(Prompt, Answer.prompt_id == Prompt.id).where(Answer.selected))}
    return S, sid, who


def canned(who):
    """modelo-uno -> "Calificación: 4/5", modelo-dos -> "**3**", modelo-tres -> "2 - deficiente", except
    modelo-tres on p1 (never a number) and on p2 (a number only after the reminder)."""
    def reply(answer, reminded):
        item, con = who[answer]
        if con == "modelo-uno":
            return "Calificación: 4/5"
        if con == "modelo-dos":
            return "**3**"
        if item == "p1":
            return "La respuesta está entre 3 y 4, difícil decidir."
        if item == "p2":
            return "Cinco." if reminded else "Es una buena respuesta."
        return "2 - deficiente"
    return reply


def test_grading_stores_like_a_rater_apart_from_humans_and_resumes(rated):
    S, sid, who = rated
    with S() as s:
        human_frame = session_scores_frame(s, sid)
        names_before, progress_before = pseudonyms(s, sid), progress_by_rater(s, sid)
    eng = JudgeEngine(canned(who))
    rep = Judge("sesion-1", seed=3).grade(S, eng, "juez")
    assert (rep.graded, rep.unparsable, rep.errors, rep.skipped, rep.total) == (11, 1, 0, 0, 12)
    # the unparsable answer was asked three times (reminder on the retries, the last one sampled); the p2 one twice
    p1 = [c for c in eng.calls if who[c[1][-1]["content"].split("[Respuesta a calificar]\n")[1]
                                     .split("\n\n[Calificación")[0]] == ("p1", "modelo-tres")]
    assert [REMINDER in c[1][-1]["content"] for c in p1] == [False, True, True]
    assert [c[2] for c in p1] == ["greedy", "greedy", "temperature"] and p1[2][3]["seed"] is not None
    assert len(eng.calls) == 10 + 3 + 2
    # a contextual turn shows the same contestant's own earlier answer, and no one else's
    c2 = [c for c in eng.calls if "¿Y el segundo?" in c[1][-1]["content"]]
    assert len(c2) == 3
    for _, msgs, _, _ in c2:
        user = msgs[-1]["content"]
        mine = who[user.split("[Respuesta a calificar]\n")[1].split("\n\n[Calificación")[0]][1]
        earlier = [t for t, (item, con) in who.items() if item == "c1"]
        assert "[Turnos anteriores" in user and "Dame dos ideas." in user
        assert [t for t in earlier if t in user] == [t for t in earlier if who[t][1] == mine]
    with S() as s:
        judge = s.scalars(select(User).where(User.name == "juez-juez")).one()
        judge_id = judge.id
        assert (judge.role, judge.active, judge.password_hash) == ("judge", False, "!")
        assert users.authenticate(s, "juez-juez", "!") is None and users.authenticate(s, "juez-juez", "") is None
        assert users.count_users(s) == 4  # the judge is not a person
        assert s.scalar(select(func.count()).select_from(SessionRater).where(SessionRater.user_id == judge.id)) == 0
        mine = s.scalars(select(Assignment).where(Assignment.session_id == sid, Assignment.rater_id == judge.id)
                         .order_by(Assignment.order_index)).all()
        assert [a.order_index for a in mine] == [0, 1, 2, 3]
        assert all(sorted(a.permutation) == ["A", "B", "C"] and a.started_at for a in mine)
        p1_id = s.scalar(select(Prompt.id).where(Prompt.external_id == "p1"))
        assert [a.finished_at is None for a in mine] == [a.prompt_id == p1_id for a in mine]
        # scores: what the fake said, the unparsable one left out
        judged = session_scores_frame(s, sid, who="judges")
        assert set(judged["rater"]) == {"juez-juez"} and len(judged) == 11
        got = {(r.item, r.contestant): r.value for r in judged.itertuples()}
        assert ("p1", "modelo-tres") not in got and got[("p2", "modelo-tres")] == 5
        assert {v for (item, con), v in got.items() if con == "modelo-uno"} == {4}
        assert {v for (item, con), v in got.items() if con == "modelo-dos"} == {3}
        assert got[("c1", "modelo-tres")] == got[("c2", "modelo-tres")] == 2
        # humans and judges never mix: the default frame, pseudonyms and progress are as before grading
        pd.testing.assert_frame_equal(session_scores_frame(s, sid), human_frame)
        assert pseudonyms(s, sid) == names_before and progress_by_rater(s, sid) == progress_before
        assert not any("juez" in str(r) for r in progress_by_rater(s, sid))
        assert len(session_scores_frame(s, sid, who="all")) == len(human_frame) + 11
        # the run: config, hashes, metrics, the unparsable reply in the details
        run = s.scalars(select(EvalRun)).one()
        assert (run.kind, run.status, run.contestant) == ("judge", "done", "juez")
        assert run.config["session"] == "sesion-1" and run.config["prompt_version"] == "juez-es-v1"
        assert run.config["retries"] == 2 and run.config["seed"] == 3 and run.hashes["base"] == FakeEngine.BASE
        assert (run.metrics["graded"], run.metrics["unparsable"], run.metrics["judge_scores"]) == (11, 1, 11)
        [detail] = run.details
        assert (detail["item"], detail["contestant"], detail["status"]) == ("p1", "modelo-tres", "unparsable")
        assert len(detail["replies"]) == 3 and detail["label"] in "ABC"
        # agreement as judge_agreement computes it from the two frames
        ag = judge_agreement(human_frame, judged, "general")
        assert run.metrics["n"] == ag.n == 11 and run.metrics["exact"] == pytest.approx(ag.exact)
        assert rep.agreement == ag
    # resumable: only the unparsable answer is asked again; nothing stored twice
    again = JudgeEngine(canned(who))
    rep2 = Judge(str(sid), seed=3).grade(S, again, "juez")  # the session by id this time
    assert (rep2.graded, rep2.unparsable, rep2.skipped) == (0, 1, 11) and len(again.calls) == 3
    with S() as s:
        assert s.scalar(select(func.count()).select_from(Score).join(Assignment).where(
            Assignment.rater_id == judge_id)) == 11
        assert s.scalar(select(func.count()).select_from(EvalRun)) == 2


def test_limit_unknown_judge_and_bad_arguments(rated):
    S, sid, who = rated
    eng = JudgeEngine(lambda answer, reminded: "3")
    rep = Judge("sesion-1", criterion="full", limit=1).grade(S, eng, "juez")
    assert rep.stopped and rep.graded == 15 and len(eng.calls) == 15  # one item x 3 answers x 5 criteria
    with S() as s:
        run = s.scalars(select(EvalRun)).one()
        assert run.metrics["stopped"] and run.config["criterion"] == "full"
        assert set(session_scores_frame(s, sid, who="judges")["criterion"]) == {
            "general", "exactitud", "relevancia", "coherencia", "comprension"}
    for kw, msg in (({"judge": "nadie"}, "No existe"), ({"judge": "apagado"}, "no está disponible"),
                    ({"criterion": "belleza"}, "Criterio"), ({"retries": -1}, "reintentos"),
                    ({"limit": 0}, "límite")):
        args = {"judge": "juez", **kw}
        with pytest.raises(EsllmError, match=msg):
            judge = args.pop("judge")
            Judge("sesion-1", **args).grade(S, eng, judge)
    with pytest.raises(EsllmError, match="No existe la sesión"):
        Judge("no-hay").grade(S, eng, "juez")
    with S() as s:  # a person already called like the judge's user: refused, not taken over
        users.add_user(s, "juez-otro", "contraseña-segura", "rater")
        s.commit()
    eng.registry.contestants["otro"] = SimpleNamespace(name="otro", available=True)
    with pytest.raises(EsllmError, match="no es un juez"):
        Judge("sesion-1").grade(S, eng, "otro")


def test_engine_failure_marks_the_run_failed_and_keeps_the_scores(rated):
    S, sid, who = rated
    calls = []

    def reply(answer, reminded):
        calls.append(answer)
        if len(calls) > 4:
            raise RuntimeError("GPU perdida")
        return "4"
    with pytest.raises(RuntimeError):
        Judge("sesion-1").grade(S, JudgeEngine(reply), "juez")
    with S() as s:
        run = s.scalars(select(EvalRun)).one()
        assert run.status == "failed" and "GPU perdida" in run.error
        assert len(session_scores_frame(s, sid, who="judges")) == 3  # the first item was committed


# ---------------------------------------------------------------- CLI and UI

def test_cli_registers_judge_and_fails_fast_on_unknown_session(rated, capsys, monkeypatch):
    from esllm.cli import evals as cli_evals
    from esllm.cli import main

    S, sid, who = rated
    p = argparse.ArgumentParser()
    cli_evals.register(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["judge", "--session", "no-hay", "--judge", "juez", "--limit", "2"])
    assert args.func is cli_evals.cmd_judge and (args.criterion, args.retries, args.seed, args.limit) == ("general", 2, 0, 2)
    monkeypatch.setenv("ESLLM_DATABASE_URL", str(S.kw["bind"].url))
    monkeypatch.setattr(cli_evals, "start_engine", lambda config: pytest.fail("no model for an unknown session"))
    with pytest.raises(EsllmError, match="No existe la sesión"):  # before any model is loaded
        args.func(args)
    assert main(["judge", "--session", "no-hay", "--judge", "juez", "--limit", "2"]) == 2
    assert "No existe la sesión" in capsys.readouterr().err


def _ctx(S, engine):
    from esllm.ui.context import AppContext

    return AppContext(config=None, engine=engine, sessionmaker=S, local_mode=False)


def test_ui_refuses_raters_and_anonymous_and_grades_for_admins(rated):
    import gradio as gr

    from esllm.ui.resultados_juez import HEADERS, build_juez, grade_handler, table_handler

    S, sid, who = rated
    eng = JudgeEngine(canned(who))
    ctx = _ctx(S, eng)
    rater, anonymous, admin = (SimpleNamespace(username=n) for n in ("ana", None, "jefa"))
    for request, msg in ((rater, "permiso"), (anonymous, "Inicie sesión")):
        with pytest.raises(gr.Error, match=msg):
            grade_handler(ctx, "sesion-1", "juez", "general", request)
        with pytest.raises(gr.Error, match=msg):
            table_handler(ctx, request)
    assert eng.calls == []
    with S() as s:
        assert s.scalar(select(func.count()).select_from(EvalRun)) == 0
    with pytest.raises(gr.Error, match="concursante disponible"):
        grade_handler(ctx, "sesion-1", "apagado", "general", admin)
    md, rows = grade_handler(ctx, "sesion-1", "juez", "general", admin)
    assert "11 calificadas" in md and "1 sin número legible" in md
    [row] = rows
    assert len(row) == len(HEADERS) and row[:5] == ["sesion-1", "juez", "General", 11, 1] and row[9] == 11
    assert table_handler(ctx, admin) == rows
    # the accordion: api names, and a load that fills the dropdowns for admins only
    with gr.Blocks() as demo:
        load, outputs = build_juez(ctx)
    apis = {getattr(fn, "api_name", None) for fn in demo.fns.values()}
    assert {"juez_calificar", "juez_tabla"} <= apis and len(outputs) == 3
    sess, judge, table = load(rater)
    assert sess["choices"] == [] and judge["choices"] == [] and table is None
    sess, judge, table = load(admin)
    assert list(sess["choices"]) == ["sesion-1"] and list(judge["choices"]) == ["juez"]
    assert table == rows
