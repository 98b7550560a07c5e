"""PostgreSQL for real: the schema from an empty database, concurrent upgrades, and many raters saving at once.

    bash scripts/test.sh tests/test_postgres.py      # starts a throwaway PostgreSQL cluster, runs, stops it
    ESLLM_TEST_POSTGRES_URL=postgresql+psycopg://USER@127.0.0.1:PORT/postgres .venv/bin/python -m pytest tests/test_postgres.py

The store, rating and export tests (test_store, test_sessions, test_export) also run on PostgreSQL through the
`backend` fixture; this file holds what only makes sense there. Skipped, saying why, without a cluster (failed
instead under scripts/test.sh, which sets ESLLM_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections import Counter

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select

from esllm import EsllmError
from esllm.store import db
from esllm.store.models import METADATA, Assignment, ContestantSnapshot, Score, User
from esllm.study.answers import generate_answers
from esllm.study.sessions import create_session, submit
from tests.helpers import EVALUAR, REPO, ROWS, FakeEngine, login, new_store, open_session, rate_app, save

pytestmark = pytest.mark.postgres

NAMES = ["modelo-uno", "modelo-dos", "modelo-tres"]
RATERS = [f"evaluador{i:02d}" for i in range(1, 9)]
PROMPTS = "\n".join(json.dumps({"id": f"p{i:02d}", "category": "basicas", "text": f"Pregunta {i}"})
                    for i in range(1, 13))


def test_upgrade_from_an_empty_database_equals_the_models(postgres):
    url = postgres.create()
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) is None and inspect(engine).get_table_names() == []
        db.upgrade(url)
        with engine.connect() as conn:
            mc = MigrationContext.configure(conn, opts={"compare_type": True})
            assert mc.get_current_revision() == db.head_revision()
            assert compare_metadata(mc, METADATA) == []
        assert set(inspect(engine).get_table_names()) == {t.name for t in METADATA.sorted_tables} | {
            "alembic_version"}
    finally:
        engine.dispose()
        postgres.drop(url)


def test_processes_starting_together_on_an_empty_database_all_upgrade_it(postgres):
    """The app and a CLI command (or several app processes) starting at once on a new database all run "upgrade
    head": the later ones must wait for the first and find the schema there, not fail on "relation already exists"."""
    url = postgres.create()
    code = "import sys; from esllm.store import db; db.upgrade(sys.argv[1])"
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(4)]
        outs = [(p.wait(120), p.stdout.read()) for p in procs]
        assert [rc for rc, _ in outs] == [0] * 4, "\n".join(out[-2000:] for _, out in outs)
        engine = db.make_engine(url)
        assert db.current_revision(engine) == db.head_revision()
        engine.dispose()
    finally:
        postgres.drop(url)


def _values(rng: random.Random) -> dict[str, dict[str, int]]:
    return {label: {"general": rng.randint(1, 5)} for label in "ABC"}


def test_concurrent_raters_lose_nothing_and_duplicate_nothing(postgres):
    """Eight raters save their items at the same time, each item from two tabs at once (a double click, two
    windows): first saves with the same values in both tabs, with different values, then edits from both tabs.
    Every save a rater was told «guardado» is stored (0 lost); every score is stored once (0 duplicated); the tab
    that lost a first-save race is told which values were kept; an edit race ends with one tab's whole set."""
    url = postgres.head_database()
    store = new_store(url, accounts=dict.fromkeys(RATERS, "rater"), prompt_sets={"general": PROMPTS})
    try:
        generate_answers(store.Session, FakeEngine(NAMES), "general", NAMES, attempts=1)
        with store.Session() as s:
            ids = [c.id for c in s.scalars(select(ContestantSnapshot).order_by(ContestantSnapshot.id))]
            sid = create_session(s, name="carga", prompt_set="general", contestant_ids=ids, raters=RATERS, k=4,
                                 rng=random.Random(1)).id
            s.commit()
            queues = {name: list(s.scalars(select(Assignment.id).join(User, User.id == Assignment.rater_id)
                                           .where(Assignment.session_id == sid, User.name == name)
                                           .order_by(Assignment.order_index)))
                      for name in RATERS}
            rater_ids = {name: i for name, i in s.execute(select(User.name, User.id))}
        assert sum(map(len, queues.values())) == 12 * 4

        told: dict[tuple[str, int, int], tuple[str, dict]] = {}  # (phase, assignment, tab) -> (outcome, values)
        lock = threading.Lock()

        def tab(phase: str, rater: str, assignment_id: int, i: int, values: dict, barrier: threading.Barrier) -> None:
            with store.Session() as s:
                barrier.wait()
                try:
                    submit(s, rater_id=rater_ids[rater], assignment_id=assignment_id, scores=values)
                    s.commit()
                    outcome = "ok"
                except EsllmError as e:
                    outcome = f"EsllmError: {e}"
                except Exception as e:  # anything else (a deadlock, a lost connection) fails the test below
                    outcome = f"{type(e).__name__}: {e}"
            with lock:
                told[phase, assignment_id, i] = (outcome, values)

        def rater_saves(phase: str, rater: str, seed: int) -> None:
            rng = random.Random(seed)
            for assignment_id in queues[rater]:
                first = _values(rng)
                second = first if phase == "same" else _values(rng)
                while phase != "same" and second == first:
                    second = _values(rng)
                barrier = threading.Barrier(2, timeout=30)
                tabs = [threading.Thread(target=tab, args=(phase, rater, assignment_id, i, v, barrier))
                        for i, v in enumerate((first, second))]
                [t.start() for t in tabs]
                [t.join(60) for t in tabs]

        def run_phase(phase: str, raters: list[str]) -> None:
            threads = [threading.Thread(target=rater_saves, args=(phase, r, 100 * len(phase) + n))
                       for n, r in enumerate(raters)]
            [t.start() for t in threads]
            [t.join(120) for t in threads]

        def stored() -> tuple[dict[int, dict], int, int]:
            """({assignment: {label: {criterion: value}}}, rows duplicated, assignments finished)"""
            with store.Session() as s:
                rows = s.execute(select(Score.assignment_id, Score.answer_id, Score.criterion, Score.label,
                                        Score.value).join(Assignment, Assignment.id == Score.assignment_id)
                                 .where(Assignment.session_id == sid)).all()
                finished = s.scalar(select(func.count()).select_from(Assignment).where(
                    Assignment.session_id == sid, Assignment.finished_at.is_not(None)))
            by_item: dict[int, dict] = {}
            for a, _, c, label, v in rows:
                by_item.setdefault(a, {}).setdefault(label, {})[c] = v
            assert len(rows) == 3 * len(by_item)
            return by_item, sum(n - 1 for n in Counter((a, ans, c) for a, ans, c, _, _ in rows).values()), finished

        def lost(phase: str, by_item: dict) -> int:
            """Items whose stored scores are not the whole set of a tab told «guardado» (a mix counts as lost)."""
            n = 0
            for (p, assignment_id, _), _ in told.items():
                if p == phase:
                    n += by_item.get(assignment_id) not in [v for o, v in (told[p, assignment_id, i] for i in (0, 1))
                                                            if o == "ok"]
            return n

        # first saves: half the raters' tabs agree, the other half's disagree; then everyone edits from both tabs
        run_phase("same", RATERS[:4])
        run_phase("different", RATERS[4:])
        first, duplicated, finished = stored()
        assert (len(first), duplicated, finished) == (48, 0, 48)
        assert lost("same", first) == lost("different", first) == 0
        run_phase("edit", RATERS)
        edited, duplicated, finished = stored()
        assert (len(edited), duplicated, finished) == (48, 0, 48)
        assert lost("edit", edited) == 0

        unexpected = [o for o, _ in told.values() if not o.startswith(("ok", "EsllmError"))]
        assert unexpected == []  # no deadlock, no serialization failure, no lost connection
        for (phase, assignment_id, _), (outcome, _) in told.items():
            pair = [told[phase, assignment_id, i][0] for i in (0, 1)]
            if phase in ("same", "edit"):  # the same values, or an edit (it replaces): both tabs told «guardado»
                assert pair == ["ok", "ok"], (phase, pair)
            elif pair != ["ok", "ok"]:  # both ok: the second tab read after the first one's commit, so it edited
                # they raced: one saved, the other told the item was already saved and which values are kept
                assert sorted(o[:2] for o in pair) == ["Es", "ok"], pair
                if outcome != "ok":
                    kept = first[assignment_id]
                    shown = " · ".join(f"{label} {kept[label]['general']}" for label in "ABC")
                    assert "ya se guardó" in outcome and shown in outcome, (outcome, kept)
    finally:
        store.dispose()
        postgres.release(url)


def test_raters_save_over_http_on_an_app_whose_store_is_postgresql(tiny, tmp_path, postgres):
    """The real app (logins, «Evaluar» over HTTP) with ESLLM_DATABASE_URL on PostgreSQL: three raters save every
    item at once; each score is stored once, under the contestant its label hid, with the value sent."""
    from esllm.store.models import Answer, Prompt

    url = postgres.head_database()
    accounts = {"admin": "admin", **dict.fromkeys(("ana", "beto", "carla"), "rater")}
    try:
        with rate_app(tiny("llama"), tmp_path, EVALUAR, accounts=accounts, prompt_set="mini", rows=ROWS,
                      raters=["ana", "beto", "carla"], k=2, seed=3, db_url=url) as (app, sid):
            assert app.ctx.sessionmaker.kw["bind"].dialect.name == "postgresql"  # the app's own store
            sent: dict[str, Counter] = {}
            errors: list[str] = []

            def work(name: str, seed: int) -> None:
                try:
                    rng, mine = random.Random(seed), Counter()
                    c = login(app.url, name, EVALUAR.password)
                    out = open_session(c, sid)
                    while out[2]:  # the prompt is empty once the rater is done
                        vals = [str(rng.randint(1, 5)) for _ in range(3)]
                        prompt = out[2].split("\n\n", 1)[1]
                        mine.update((prompt, label, int(v)) for label, v in zip("ABC", vals))
                        out = save(c, vals)
                    sent[name] = mine
                except Exception as e:  # reported below
                    errors.append(f"{name}: {type(e).__name__}: {e}")

            threads = [threading.Thread(target=work, args=(n, i)) for i, n in enumerate(("ana", "beto", "carla"))]
            [t.start() for t in threads]
            [t.join(300) for t in threads]
            assert errors == []
            with app.Session() as s:
                rows = s.execute(select(Score, Assignment, Prompt, Answer, User)
                                 .join(Assignment, Score.assignment_id == Assignment.id)
                                 .join(Prompt, Assignment.prompt_id == Prompt.id)
                                 .join(Answer, Score.answer_id == Answer.id).join(User, User.id == Assignment.rater_id)
                                 .where(Assignment.session_id == sid)).all()
                n_assign = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.session_id == sid))
            assert len(rows) == 3 * n_assign == 3 * 4 * 2  # 4 items, k = 2
            assert set(Counter((sc.assignment_id, sc.answer_id, sc.criterion) for sc, *_ in rows).values()) == {1}
            stored: dict[str, Counter] = {}
            for sc, a, p, ans, u in rows:
                assert ans.contestant_id == a.permutation[sc.label] and a.finished_at is not None
                stored.setdefault(u.name, Counter())[(p.text, sc.label, sc.value)] += 1
            assert stored == sent
    finally:
        postgres.release(url)
