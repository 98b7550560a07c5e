"""Rating sessions on the store: plan persisted, blind item views, atomic and idempotent submits."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest
from sqlalchemy import func, select

from esllm import EsllmError
from esllm.store import db, users
from esllm.store.models import Assignment, ContestantSnapshot, Score
from esllm.study.answers import generate_answers
from esllm.study.sessions import create_session, item_view, next_item, progress, submit
from tests.helpers import ROWS, FakeEngine, new_store

NAMES = ["modelo-secreto-uno", "modelo-secreto-dos", "modelo-secreto-tres"]


@pytest.fixture()
def Session(tmp_path):
    store = new_store(tmp_path / "s.sqlite3", accounts=dict.fromkeys(("ana", "beto", "carla"), "rater"),
                      prompt_sets={"mini": ROWS})
    generate_answers(store.Session, FakeEngine(NAMES), "mini", NAMES, attempts=1)
    yield store.Session
    store.dispose()


def make(S, k=2, mode="general", name="sesion-1"):
    with S() as s:
        ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
        rs = create_session(s, name=name, prompt_set="mini", contestant_ids=ids, raters=["ana", "beto", "carla"],
                            k=k, rubric_mode=mode, rng=random.Random(5))
        s.commit()
        return rs.id


def uid(S, name):
    with S() as s:
        return users.authenticate(s, name, "contraseña-segura").id


def full_scores(crit=("general",), v=4):
    return {label: {c: v for c in crit} for label in "ABC"}


def test_assignments_cover_each_item_k_times_and_survive_restart(Session):
    sid = make(Session, k=2)
    with Session() as s:
        rows = s.scalars(select(Assignment).where(Assignment.session_id == sid)).all()
        assert Counter(a.prompt_id for a in rows) == {p: 2 for p in {a.prompt_id for a in rows}}
        before = {(a.rater_id, a.prompt_id): a.permutation for a in rows}
    maker2 = db.make_sessionmaker(db.make_engine(str(Session.kw["bind"].url)))  # a "restart": a new engine, same file
    with maker2() as s:
        after = {(a.rater_id, a.prompt_id): a.permutation for a in s.scalars(select(Assignment))}
    assert before == after and all(sorted(p) == ["A", "B", "C"] for p in after.values())


def test_item_view_never_names_a_contestant(Session):
    sid = make(Session)
    with Session() as s:
        rater = uid(Session, "ana")
        seen = []
        while (item := next_item(s, sid, rater)) is not None:
            seen.append(json.dumps(dataclasses.asdict(item), ensure_ascii=False))
            submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=full_scores())
            s.commit()
    blob = "\n".join(seen)
    assert seen
    for n in NAMES + [FakeEngine.BASE, "alpaca"]:
        assert n not in blob


def test_contextual_item_shows_earlier_turns_with_own_labels(Session):
    sid = make(Session, k=3)
    with Session() as s:
        rater = uid(Session, "beto")
        while (item := next_item(s, sid, rater)) is not None:
            if item.prompt == "¿Y el segundo?":
                assert [m["role"] for m in item.context] == ["user", "assistant A", "assistant B", "assistant C"]
                # the earlier answer under label X comes from the same contestant as the current answer X
                for label in "ABC":
                    assert item.context[1 + "ABC".index(label)]["content"].split("#")[0] == \
                        item.answers[label].split("#")[0]
                return
            submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=full_scores())
            s.commit()
    pytest.fail("the contextual turn 2 never came")


@pytest.mark.parametrize("bad", [0, 6, 5.5, "5", None, True])
def test_invalid_scores_write_nothing(Session, bad):
    sid = make(Session)
    rater = uid(Session, "ana")
    with Session() as s:
        item = next_item(s, sid, rater)
        scores = full_scores()
        scores["B"]["general"] = bad
        with pytest.raises(EsllmError, match="1 a 5"):
            submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=scores)
        s.rollback()
        assert s.scalar(select(func.count()).select_from(Score)) == 0


def test_missing_label_or_aspect_is_refused(Session):
    sid = make(Session, mode="full")
    rater = uid(Session, "ana")
    with Session() as s:
        item = next_item(s, sid, rater)
        assert item.criteria == ("general", "exactitud", "relevancia", "coherencia", "comprension")
        with pytest.raises(EsllmError):
            submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=full_scores())  # general only
        with pytest.raises(EsllmError):
            submit(s, rater_id=rater, assignment_id=item.assignment_id,
                   scores={"A": {c: 3 for c in item.criteria}})
        assert s.scalar(select(func.count()).select_from(Score)) == 0


def test_other_raters_item_is_refused(Session):
    sid = make(Session)
    ana, beto = uid(Session, "ana"), uid(Session, "beto")
    with Session() as s:
        item = next_item(s, sid, ana)
        with pytest.raises(EsllmError, match="no es suyo"):
            submit(s, rater_id=beto, assignment_id=item.assignment_id, scores=full_scores())
        assert s.scalar(select(func.count()).select_from(Score)) == 0


def test_resubmit_updates_never_duplicates_and_progress_resumes(Session):
    sid = make(Session)
    rater = uid(Session, "carla")
    with Session() as s:
        item = next_item(s, sid, rater)
        for v in (4, 4, 2):  # double click, then a change of mind
            submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=full_scores(v=v), comment="ok")
            s.commit()
        vals = s.scalars(select(Score.value).where(Score.assignment_id == item.assignment_id)).all()
        assert sorted(vals) == [2, 2, 2]
        done, total = progress(s, sid, rater)
        assert done == 1 and total >= 2
    with Session() as s:  # logout / refresh / restart: the next item is the next one
        nxt = next_item(s, sid, rater)
        assert nxt.assignment_id != item.assignment_id and nxt.position == 2


@pytest.mark.parametrize("kw, msg", [
    ({"k": 4}, "solapamiento"),
    ({"raters": ["ana", "nadie"]}, "nadie"),
    ({"rubric_mode": "otro"}, "rúbrica"),
])
def test_bad_session_definitions(Session, kw, msg):
    with Session() as s:
        ids = [c.id for c in s.scalars(select(ContestantSnapshot))]
        args = dict(name="x", prompt_set="mini", contestant_ids=ids, raters=["ana", "beto", "carla"], k=2)
        args.update(kw)
        with pytest.raises(EsllmError, match=msg):
            create_session(s, **args)


def test_item_view_of_a_finished_item_shows_the_raters_scores(Session):
    sid = make(Session)
    rater = uid(Session, "ana")
    with Session() as s:
        item = next_item(s, sid, rater)
        assert item.previous == {}
        submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=full_scores(v=3), comment=" bien ")
        s.commit()
        view = item_view(s, s.get(Assignment, item.assignment_id))
    assert view.previous == {"A": {"general": 3}, "B": {"general": 3}, "C": {"general": 3}, "comentario": "bien"}


def test_save_and_next_item_run_few_statements_on_the_queue_index(Session):
    """A save costs a fixed number of SQL statements however long the queue, the next item is fetched with
    LIMIT 1 (it used to load every unfinished assignment to keep one) and both the next-item query and the
    progress count use ix_assignment_queue."""
    from sqlalchemy import event

    sid = make(Session, k=3)
    rater = uid(Session, "ana")
    engine = Session.kw["bind"]
    seen: list[tuple[str, object]] = []
    listen = lambda conn, cur, stmt, params, ctx, many: seen.append((stmt, params))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    try:
        counts = []
        with Session() as s:
            item = next_item(s, sid, rater)
            s.commit()
            while item is not None:
                seen.clear()
                submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=full_scores())
                s.commit()
                n_submit = len(seen)
                item = next_item(s, sid, rater)
                s.commit()
                counts.append((n_submit, len(seen) - n_submit))
                if item is not None:
                    queries = list(seen[n_submit:])
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    # submit: assignment+session, 3 answers, existing scores, 3 score INSERTs, assignment UPDATE
    assert len(counts) >= 3 and all(n <= 7 for n, _ in counts), counts
    # next item (+ started_at), the earlier turns if it is in a series, all its answers, progress
    assert all(n <= 5 for _, n in counts), counts
    nxt = next(st for st, _ in queries if st.lstrip().startswith("SELECT assignment."))
    prog = next(st for st, _ in queries if "count(" in st)
    assert "LIMIT" in nxt
    with engine.connect() as conn:
        for st, params in queries:
            if st in (nxt, prog):
                plan = " ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + st, params))
                assert "ix_assignment_queue" in plan, (st, plan)


def test_closed_session_refuses_saves_and_is_no_longer_the_raters(Session):
    from esllm.store.models import RatingSession
    from esllm.study.sessions import rater_session

    sid = make(Session)
    ana = uid(Session, "ana")
    with Session() as s:
        assert rater_session(s, sid, ana).id == sid
        assert rater_session(s, sid + 1, ana) is None and rater_session(s, str(sid), ana) is None
        item = next_item(s, sid, ana)
        s.get(RatingSession, sid).status = "closed"
        s.commit()
        assert rater_session(s, sid, ana) is None
        with pytest.raises(EsllmError, match="cerrada"):
            submit(s, rater_id=ana, assignment_id=item.assignment_id, scores=full_scores())
        assert s.scalar(select(func.count()).select_from(Score)) == 0
