"""Rating sessions on the store: plan persisted, blind item views, atomic and idempotent submits.

Each test runs on SQLite and on PostgreSQL (the `backend` fixture), racing double submits included."""

from __future__ import annotations

import dataclasses
import json
import random
import re
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
def Session(backend):
    store = new_store(backend.new_url(at_head=True), accounts=dict.fromkeys(("ana", "beto", "carla"), "rater"),
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
    url = Session.kw["bind"].url.render_as_string(hide_password=False)
    maker2 = db.make_sessionmaker(db.make_engine(url))  # a "restart": a new engine, same database
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


def test_a_comment_with_a_nul_character_is_refused_on_every_backend(Session):
    """PostgreSQL cannot store U+0000 in text (psycopg raises DataError, not a Spanish message); SQLite could: the
    same refusal on both, before anything is written."""
    sid = make(Session)
    rater = uid(Session, "ana")
    with Session() as s:
        item = next_item(s, sid, rater)
        with pytest.raises(EsllmError, match="carácter nulo"):
            submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=full_scores(), comment="bien\x00")
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


def _nothing_written(S) -> bool:
    from esllm.store.models import RatingSession, SessionRater

    with S() as s:
        return all(s.scalar(select(func.count()).select_from(m)) == 0 for m in (RatingSession, SessionRater, Assignment))


def test_only_accounts_of_role_rater_can_rate_a_session(Session):
    """An admin listed as a rater (they see the study's results, names included) is refused; nothing is written."""
    with Session() as s:
        users.add_user(s, "jefa", "contraseña-segura", "admin")
        s.commit()
        ids = [c.id for c in s.scalars(select(ContestantSnapshot))]
        with pytest.raises(EsllmError, match="La cuenta 'jefa' es de rol «admin», no evaluador"):
            create_session(s, name="x", prompt_set="mini", contestant_ids=ids, raters=["ana", "Jefa"], k=1)
        s.rollback()
    assert _nothing_written(Session)


@pytest.mark.parametrize("name, msg", [
    ("x" * 10_000, "tiene 10000 caracteres; el máximo es 100"),
    ("x" * 101, "tiene 101 caracteres; el máximo es 100"),
    ("   ", "necesita un nombre"),
    ("piloto\nmarzo", "saltos de línea"),
    ("piloto\u202e", "invisibles"),  # a bidi override would reorder what raters read
    ("piloto\x00", "control"),
])
def test_a_bad_session_name_is_refused_and_writes_nothing(Session, name, msg):
    with Session() as s:
        ids = [c.id for c in s.scalars(select(ContestantSnapshot))]
        with pytest.raises(EsllmError, match=msg):
            create_session(s, name=name, prompt_set="mini", contestant_ids=ids, raters=["ana"], k=1)
        s.rollback()
    assert _nothing_written(Session)


def test_a_session_name_is_stripped_and_up_to_100_characters(Session):
    sid = make(Session, name=" " + "ñ" * 100 + " ")
    from esllm.store.models import RatingSession

    with Session() as s:
        assert s.get(RatingSession, sid).name == "ñ" * 100
        ids = [c.id for c in s.scalars(select(ContestantSnapshot))]
        with pytest.raises(EsllmError, match="Ya existe una sesión"):  # the same name once stripped
            create_session(s, name="ñ" * 100 + "  ", prompt_set="mini", contestant_ids=ids, raters=["ana"], k=1)


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
        explain, index = "EXPLAIN QUERY PLAN ", "ix_assignment_queue"
        if engine.dialect.name == "postgresql":
            # A few rows: PostgreSQL's planner picks by cost and may prefer the UNIQUE (session, rater, order) index,
            # whose leading columns serve too; what must hold is that an index on the rater's queue is usable.
            conn.exec_driver_sql("SET enable_seqscan = off")
            explain, index = "EXPLAIN ", r"Scan using (ix_assignment_queue|uq_assignment_session_id_rater_id_order_index) on assignment"
        for st, params in queries:
            if st in (nxt, prog):
                plan = " ".join(r[-1] for r in conn.exec_driver_sql(explain + st, params))
                assert re.search(index, plan), (st, plan)


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


def general(values) -> dict:
    """{"A": {"general": a}, …} from (a, b, c), or from one value for all three."""
    values = (values,) * 3 if isinstance(values, int) else values
    return {label: {"general": v} for label, v in zip("ABC", values)}


def _race(Session, sid, rater, values: tuple, before=None) -> tuple[list, list[int]]:
    """Two saves of one item (separate database sessions, as two browser tabs), both past their read of the
    item's scores before either writes (a barrier at the score INSERT, or at the UPDATE when the item was saved
    `before`). (what each caller got: "ok" or the error text, the general values stored for A, B, C)."""
    import threading

    from sqlalchemy import event

    with Session() as s:
        item = next_item(s, sid, rater)
        if before is not None:
            submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=general(before))
        s.commit()
    barrier = threading.Barrier(2, timeout=10)
    engine = Session.kw["bind"]
    waited: set[int] = set()
    write = "INSERT INTO score" if before is None else "UPDATE score"

    def at_insert(conn, cur, stmt, params, ctx, many):
        if stmt.lstrip().startswith(write) and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait()  # both have read "no scores yet" and neither has written

    got: list = [None, None]

    def save(i: int) -> None:
        with Session() as s:
            try:
                submit(s, rater_id=rater, assignment_id=item.assignment_id, scores=general(values[i]))
                s.commit()
                got[i] = "ok"
            except Exception as e:  # reported by the test
                got[i] = f"{type(e).__name__}: {e}"

    event.listen(engine, "before_cursor_execute", at_insert)
    try:
        threads = [threading.Thread(target=save, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
    finally:
        event.remove(engine, "before_cursor_execute", at_insert)
    assert len(waited) == 2, "both saves reached the INSERT: the race did happen"
    with Session() as s:
        rows = s.scalars(select(Score).where(Score.assignment_id == item.assignment_id).order_by(Score.label)).all()
        assert len(rows) == 3 and [(r.label, r.criterion) for r in rows] == [(x, "general") for x in "ABC"]
        assert s.get(Assignment, item.assignment_id).finished_at is not None
        return got, [r.value for r in rows]


def test_racing_double_submit_with_the_same_values_saves_once_and_both_are_told_saved(Session):
    """A double click or two tabs: the second save finds the first one's rows; same values, so it was saved."""
    sid = make(Session)
    got, stored = _race(Session, sid, uid(Session, "ana"), (4, 4))
    assert got == ["ok", "ok"], got
    assert stored == [4, 4, 4]


def test_racing_double_submit_with_other_values_keeps_the_first_and_tells_the_second(Session):
    """Two tabs saving one item with different values at once: the first commit wins; the other caller is told
    the item was already saved with other values, which ones are kept, and never that its data was invalid."""
    sid = make(Session)
    got, stored = _race(Session, sid, uid(Session, "ana"), (4, 2))
    assert sorted(got, key=lambda g: g != "ok")[0] == "ok" and got.count("ok") == 1, got
    winner = got.index("ok")
    kept = (4, 2)[winner]
    assert stored == [kept] * 3, "the values stored are those of the caller told «guardado»"
    loser = got[1 - winner]
    assert loser.startswith("EsllmError") and "inválid" not in loser, loser
    assert "ya se guardó" in loser and f"A {kept} · B {kept} · C {kept}" in loser, loser


def test_racing_edits_of_a_saved_item_end_with_one_callers_whole_set(Session):
    """Two tabs changing an item saved before, at once: both are told «guardado» (an edit replaces), so the last
    commit wins, with its whole set: never A from one caller and B from the other."""
    sid = make(Session)
    got, stored = _race(Session, sid, uid(Session, "ana"), ((4, 3, 3), (3, 4, 3)), before=(3, 3, 3))
    assert got == ["ok", "ok"], got
    assert tuple(stored) in ((4, 3, 3), (3, 4, 3)), stored
