"""The data store: migrations equal the models, SQLite settings, schema integrity, users and the users CLI.

    .venv/bin/python -m pytest tests/test_store.py -q

Every test that touches a database runs twice, on SQLite and on PostgreSQL (the `backend` fixture; the PostgreSQL
run needs the cluster scripts/test.sh starts), each time on its own new database upgraded by Alembic exactly as
the app does it. The users CLI runs in-process (the `cli` fixture).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from esllm import EsllmError
from esllm.store import db
from esllm.store.models import (
    METADATA,
    Answer,
    Assignment,
    ChatFeedback,
    ContestantSnapshot,
    Prompt,
    PromptSet,
    RatingSession,
    Score,
    SessionContestant,
    SessionRater,
    User,
    Vote,
    get_or_create_contestant,
    save_score,
)
from esllm.store.users import add_user, authenticate, count_users, hash_password, list_users, verify_password
from tests.helpers import REPO

# IntegrityError texts: SQLite's, then PostgreSQL's (a CHECK's name appears in both)
UNIQUE = "UNIQUE constraint failed|violates unique constraint"
FOREIGN_KEY = "FOREIGN KEY constraint failed|violates foreign key constraint"


@pytest.fixture
def url(any_store) -> str:
    return any_store.url


@pytest.fixture
def engine(url):
    e = db.make_engine(url)
    yield e
    e.dispose()


@pytest.fixture
def Session(engine):
    return db.make_sessionmaker(engine)


def _seed(s) -> dict:
    """A prompt set with one prompt, three contestants with one selected answer each, a rater, a session
    and one assignment. Returns the ids."""
    ps = PromptSet(name="general", description="prueba")
    s.add(ps)
    s.flush()
    p = Prompt(set_id=ps.id, external_id="g-01", category="comprensión básica", text="¿Qué es el IVA?")
    s.add(p)
    s.flush()
    cs = [get_or_create_contestant(s, name=f"c{i}", base="bundled:gemma-3-270m", template="gemma",
                                   preset="greedy", params={"do_sample": False}) for i in range(3)]
    answers = []
    for c in cs:
        a = Answer(prompt_id=p.id, contestant_id=c.id, attempt=1, text=f"respuesta de {c.name}", selected=True,
                   params={"do_sample": False}, new_tokens=12, latency_s=0.5, ended_on_eos=True,
                   finish_reason="eos")
        s.add(a)
        answers.append(a)
    u = User(name="rita", password_hash="x", role="rater")
    s.add(u)
    s.flush()
    rs = RatingSession(name="sesión 1", prompt_set_id=ps.id, rubric_mode="general", overlap_k=1, status="open")
    s.add(rs)
    s.flush()
    s.add_all([SessionContestant(session_id=rs.id, contestant_id=c.id, position=i) for i, c in enumerate(cs)])
    s.add(SessionRater(session_id=rs.id, user_id=u.id))
    asg = Assignment(session_id=rs.id, rater_id=u.id, prompt_id=p.id, order_index=0,
                     permutation={"A": cs[2].id, "B": cs[0].id, "C": cs[1].id})
    s.add(asg)
    s.flush()
    return dict(set=ps.id, prompt=p.id, contestants=[c.id for c in cs], answers=[a.id for a in answers],
                user=u.id, session=rs.id, assignment=asg.id)


# ---------------------------------------------------------------- migrations

def test_upgrade_empty_db_to_head_matches_models(url, engine):
    with engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"compare_type": True})
        assert mc.get_current_revision() == db.head_revision() == "0003"
        assert compare_metadata(mc, METADATA) == []
        # the comparison does see differences: drop an index and it reports it
        conn.exec_driver_sql("DROP INDEX ix_score_answer_id")
        diff = compare_metadata(mc, METADATA)
        assert [d[0] for d in diff] == ["add_index"] and diff[0][1].name == "ix_score_answer_id"


def _schema_details(e) -> dict:
    """What compare_metadata leaves out: CHECK constraints, ON DELETE actions, partial indexes."""
    insp = inspect(e)
    out = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        checks = sorted((c["name"], " ".join(c["sqltext"].split())) for c in insp.get_check_constraints(table))
        fks = sorted((tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                     for f in insp.get_foreign_keys(table))
        idx = sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]),
                      str(i.get("dialect_options", {}).get(f"{e.dialect.name}_where"))) for i in insp.get_indexes(table))
        out[table] = (checks, fks, idx)
    return out


def test_migration_has_the_models_checks_cascades_and_partial_index(engine, backend):
    direct = db.make_engine(backend.new_url())  # the same backend, schema made by create_all from the models
    METADATA.create_all(direct)
    want, got = _schema_details(direct), _schema_details(engine)
    direct.dispose()
    assert set(got) == {t.name for t in METADATA.sorted_tables}
    assert got == want
    assert ("value_range" in str(got["score"][0])) and ("CASCADE" in str(got["score"][1]))
    partial = [i for i in got["answer"][2] if i[0] == "uq_answer_selected"]
    assert partial and partial[0][2] and "selected" in partial[0][3], got["answer"][2]


def test_downgrade_to_base_and_upgrade_again(url, engine):
    cfg = db.alembic_config(url)
    command.downgrade(cfg, "base")
    assert inspect(engine).get_table_names() == ["alembic_version"]
    db.upgrade(url)
    assert "score" in inspect(engine).get_table_names()
    assert db.current_revision(engine) == "0003"


def test_database_url_default_and_override(monkeypatch):
    monkeypatch.delenv("ESLLM_DATABASE_URL", raising=False)
    assert db.database_url() == f"sqlite:///{REPO / 'db' / 'esllm.sqlite3'}"
    monkeypatch.setenv("ESLLM_DATABASE_URL", "sqlite:////tmp/otra.sqlite3")
    assert db.database_url() == "sqlite:////tmp/otra.sqlite3"


def test_import_has_no_side_effects(tmp_path):
    target = tmp_path / "sub" / "never.sqlite3"
    code = "import esllm.store, esllm.store.db, esllm.store.models, esllm.store.users, esllm.cli"
    env = dict(os.environ, ESLLM_DATABASE_URL=f"sqlite:///{target}")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=60)
    assert not target.parent.exists()


# ---------------------------------------------------------------- SQLite settings

def test_sqlite_wal_foreign_keys_busy_timeout_on_every_connection(store):
    engine = store.Session.kw["bind"]
    with engine.connect() as c1, engine.connect() as c2:  # two pooled connections, each set up on connect
        for conn in (c1, c2):
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS == 5000


def test_bad_database_url_is_a_clear_error():
    with pytest.raises(EsllmError, match="ESLLM_DATABASE_URL"):
        db.make_engine("no es una url")


def test_a_postgresql_url_uses_psycopg_3_and_no_sqlite_pragma():
    """`postgresql://…` alone would make SQLAlchemy load psycopg2, which is not installed (nothing connects here)."""
    from sqlalchemy import event

    for url in ("postgresql://ana:x@127.0.0.1:1/esllm", "postgresql+psycopg://ana:x@127.0.0.1:1/esllm"):
        e = db.make_engine(url)
        assert (e.dialect.name, e.dialect.driver) == ("postgresql", "psycopg")
        assert not event.contains(e, "connect", db._sqlite_pragmas) and e.pool._pre_ping
        e.dispose()


# ---------------------------------------------------------------- integrity

@pytest.mark.parametrize("value", [0, 6])
def test_score_value_outside_1_to_5_is_rejected(Session, value):
    with Session() as s:
        ids = _seed(s)
        s.add(Score(assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=value))
        with pytest.raises(IntegrityError, match="ck_score_value_range"):
            s.flush()


def test_score_values_1_and_5_are_accepted(Session):
    with Session.begin() as s:
        ids = _seed(s)
        s.add(Score(assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=1))
        s.add(Score(assignment_id=ids["assignment"], answer_id=ids["answers"][1], label="B", value=5))
    with Session() as s:
        assert sorted(s.scalars(select(Score.value))) == [1, 5]


def test_second_score_for_same_answer_and_criterion_is_an_integrity_error(Session):
    with Session() as s:
        ids = _seed(s)
        s.add(Score(assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=3))
        s.flush()
        # another criterion is a different score
        s.add(Score(assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=4,
                    criterion="exactitud"))
        s.flush()
        s.add(Score(assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=4))
        with pytest.raises(IntegrityError, match=UNIQUE):
            s.flush()


def test_save_score_updates_the_row_and_a_same_resubmit_is_a_no_op(Session):
    with Session.begin() as s:
        ids = _seed(s)
        first = save_score(s, assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=2)
        first_id, first_updated = first.id, first.updated_at
    with Session.begin() as s:
        again = save_score(s, assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=2)
        assert again.id == first_id and again.updated_at == first_updated  # nothing written
        changed = save_score(s, assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A",
                             value=4, comment="mejor de lo que parecía")
        assert changed.id == first_id
    with Session() as s:
        rows = s.scalars(select(Score)).all()
        assert [(r.value, r.comment) for r in rows] == [(4, "mejor de lo que parecía")]
        assert rows[0].updated_at > first_updated
    with Session() as s, pytest.raises(IntegrityError):
        save_score(s, assignment_id=ids["assignment"], answer_id=ids["answers"][1], label="B", value=6)


@pytest.mark.parametrize("sql, constraint", [
    ("UPDATE score SET label = 'D'", "ck_score_label"),
    ("UPDATE score SET criterion = 'estilo'", "ck_score_criterion"),
    ("UPDATE users SET role = 'boss'", "ck_users_role"),
    ("UPDATE rating_session SET overlap_k = 0", "ck_rating_session_overlap_k_positive"),
    ("UPDATE rating_session SET status = 'paused'", "ck_rating_session_status"),
    ("UPDATE rating_session SET rubric_mode = 'half'", "ck_rating_session_rubric_mode"),
    ("UPDATE session_contestant SET position = position + 3", "ck_session_contestant_position_range"),
    ("UPDATE answer SET attempt = 0", "ck_answer_attempt_positive"),
    ("INSERT INTO vote (prompt, shown, choice, created_at) VALUES ('p', '[]', 'D', '2026-01-01')",
     "ck_vote_choice"),
    ("INSERT INTO chat_feedback (contestant, prompt, answer, thumbs, params, created_at) "
     "VALUES ('c', 'p', 'a', 'meh', '{}', '2026-01-01')", "ck_chat_feedback_thumbs"),
])
def test_check_constraints_reject_bad_values(Session, sql, constraint):
    with Session() as s:
        ids = _seed(s)
        save_score(s, assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="A", value=3)
        with pytest.raises(IntegrityError, match=constraint):
            s.execute(text(sql))


def test_foreign_keys_are_enforced(Session):
    with Session() as s:
        s.add(Prompt(set_id=999, external_id="x", category="c", text="t"))
        with pytest.raises(IntegrityError, match=FOREIGN_KEY):
            s.flush()


def test_scored_answer_cannot_be_deleted_but_a_session_deletes_its_assignments_and_scores(Session):
    with Session.begin() as s:
        ids = _seed(s)
        save_score(s, assignment_id=ids["assignment"], answer_id=ids["answers"][0], label="B", value=3)
    with Session() as s:
        with pytest.raises(IntegrityError, match=FOREIGN_KEY):
            s.execute(delete(Answer).where(Answer.id == ids["answers"][0]))
    with Session.begin() as s:
        s.execute(delete(RatingSession).where(RatingSession.id == ids["session"]))
    with Session() as s:
        for model in (Score, Assignment, SessionContestant, SessionRater):
            assert s.scalar(select(func.count()).select_from(model)) == 0, model.__name__
        assert s.scalar(select(func.count()).select_from(Answer)) == 3  # answers stay with the prompt set


def test_deleting_a_user_keeps_their_votes_anonymously(Session):
    with Session.begin() as s:
        u = User(name="vera", password_hash="x", role="rater")
        s.add(u)
        s.flush()
        s.add(Vote(prompt="Hola", shown=["c1", "c0", "c2"], choice="tie", user_id=u.id))
    with Session.begin() as s:
        s.execute(delete(User))
    with Session() as s:
        v = s.scalars(select(Vote)).one()
        assert v.user_id is None and v.shown == ["c1", "c0", "c2"] and v.choice == "tie"


def test_only_one_selected_attempt_per_prompt_and_contestant(Session):
    with Session() as s:
        ids = _seed(s)
        kw = dict(prompt_id=ids["prompt"], contestant_id=ids["contestants"][0], text="otra", params={},
                  new_tokens=3, latency_s=0.1, ended_on_eos=False, finish_reason="length")
        s.add(Answer(attempt=2, selected=False, **kw))
        s.flush()  # unselected attempts are fine
        s.add(Answer(attempt=3, selected=True, **kw))
        with pytest.raises(IntegrityError, match=UNIQUE):
            s.flush()


def test_contestant_snapshot_is_reused_and_any_change_makes_a_new_one(Session):
    fields = dict(name="gemma-base", base="bundled:gemma-3-270m", template="gemma", preset="top-p",
                  params={"top_p": 0.9, "temperature": 0.7})
    with Session.begin() as s:
        a = get_or_create_contestant(s, **fields)
        b = get_or_create_contestant(s, **dict(fields, params={"temperature": 0.7, "top_p": 0.9}))
        c = get_or_create_contestant(s, **dict(fields, params={"top_p": 0.95, "temperature": 0.7}))
        d = get_or_create_contestant(s, **fields, adapter="adapters/tributario-ec", adapter_sha256="ab" * 32)
        assert a.id == b.id and len({a.id, c.id, d.id}) == 3
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(ContestantSnapshot)) == 3
        s.add(ContestantSnapshot(key=a.key, **fields))  # the same snapshot written by hand still collides
        with pytest.raises(IntegrityError, match=UNIQUE):
            s.flush()


def test_a_nul_character_in_stored_text_becomes_u_fffd_on_every_backend(Session):
    """PostgreSQL's text cannot hold U+0000 (psycopg would refuse the whole INSERT, losing the batch's answer); a
    model can generate one (a byte-fallback token): every text column stores U+FFFD instead, SQLite alike."""
    with Session.begin() as s:
        ids = _seed(s)
        kw = dict(prompt_id=ids["prompt"], contestant_id=ids["contestants"][0], params={}, new_tokens=3,
                  latency_s=0.1, ended_on_eos=False, finish_reason="length", selected=False)
        s.add(Answer(attempt=2, text="Hola\x00mundo\x00", **kw))
        s.add(ChatFeedback(contestant="c0", prompt="¿\x00?", answer="\x00", thumbs="up", params={"x": "\x00"}))
        s.add(PromptSet(name="con-nul", description="a\x00b"))
    with Session() as s:
        assert s.scalar(select(Answer.text).where(Answer.attempt == 2)) == "Hola\ufffdmundo\ufffd"
        fb = s.scalars(select(ChatFeedback)).one()
        assert (fb.prompt, fb.answer, fb.params) == ("¿\ufffd?", "\ufffd", {"x": "\x00"})  # JSON escapes it
        assert s.scalar(select(PromptSet.description).where(PromptSet.name == "con-nul")) == "a\ufffdb"


def test_timestamps_come_back_as_utc(Session):
    with Session.begin() as s:
        s.add(PromptSet(name="tributario-ec"))
    with Session() as s:
        created = s.scalars(select(PromptSet.created_at)).one()
        assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
        raw = s.execute(text("SELECT created_at FROM prompt_set")).scalar()
        if s.bind.dialect.name == "sqlite":
            assert "+" not in str(raw)  # stored as naive UTC text on SQLite
        else:  # timestamptz on PostgreSQL: the same instant, whatever the server's time zone
            assert raw.tzinfo is not None and raw == created


# ---------------------------------------------------------------- users

def test_password_hash_round_trip_and_wrong_password():
    h = hash_password("correcto-caballo")
    scheme, n, r, p, salt, digest = h.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    assert verify_password("correcto-caballo", h)
    assert not verify_password("correcto-caballO", h)
    assert not verify_password("", h)
    assert hash_password("correcto-caballo") != h  # a fresh salt every time
    assert not verify_password("correcto-caballo", "md5$abc")
    assert not verify_password("correcto-caballo", h.replace("scrypt", "bcrypt"))


def test_add_user_authenticate_and_count(Session):
    with Session.begin() as s:
        assert count_users(s) == 0
        add_user(s, "Ana.Perez", "clave-larga-1", "admin")
        add_user(s, "luis", "clave-larga-2", "rater")
    with Session() as s:
        assert count_users(s) == 2 and count_users(s, "admin") == 1
        assert [u.name for u in list_users(s)] == ["ana.perez", "luis"]
        user = authenticate(s, "ANA.perez", "clave-larga-1")
        assert user is not None and user.role == "admin" and user.password_hash.startswith("scrypt$")
        assert authenticate(s, "ana.perez", "clave-larga-2") is None
        assert authenticate(s, "nadie", "clave-larga-1") is None
    with Session.begin() as s:
        s.scalars(select(User).where(User.name == "luis")).one().active = False
    with Session() as s:
        assert authenticate(s, "luis", "clave-larga-2") is None  # deactivated


@pytest.mark.parametrize("name, password, role, message", [
    ("ana", "clave-larga", "admin", "Ya existe"),
    ("ANA", "clave-larga", "rater", "Ya existe"),
    ("bea", "clave-larga", "boss", "Rol no válido"),
    ("bea", "corta", "rater", "demasiado corta"),
    ("bea", "", "rater", "vacía"),
    ("bea", "        ", "rater", "vacía"),
    ("b", "clave-larga", "rater", "Nombre de usuario no válido"),
    ("be a", "clave-larga", "rater", "Nombre de usuario no válido"),
    ("josé", "clave-larga", "rater", "Nombre de usuario no válido"),
    ("-bea", "clave-larga", "rater", "Nombre de usuario no válido"),
])
def test_add_user_errors_are_clear(Session, name, password, role, message):
    with Session.begin() as s:
        add_user(s, "ana", "clave-larga", "admin")
    with Session() as s, pytest.raises(EsllmError, match=message):
        add_user(s, name, password, role)
    with Session() as s:
        assert count_users(s) == 1


# ---------------------------------------------------------------- CLI

@pytest.fixture
def _cli(cli):
    """_cli(args, db_url, stdin="") -> (returncode, stdout, stderr) of `python -m esllm users ARGS`, in-process."""
    return lambda args, db_url, stdin="": cli("users", *args, db_url=db_url, stdin=stdin)


def test_users_cli_add_and_list_on_a_new_database(tmp_path, backend, _cli):
    # SQLite: a file not there yet, in a folder not there yet (the CLI creates both); PostgreSQL: an empty database
    url = f"sqlite:///{tmp_path / 'nueva' / 'cli.sqlite3'}" if backend.name == "sqlite" else backend.new_url()
    empty = _cli(["list"], url)
    assert empty.returncode == 0 and "No hay usuarios" in empty.stdout
    added = _cli(["add", "Marta", "--role", "admin", "--password-stdin"], url, stdin="una clave segura\n")
    assert added.returncode == 0, added.stderr
    assert "marta" in added.stdout
    assert _cli(["add", "raul", "--role", "rater", "--password-stdin"], url, stdin="otra-clave\n").returncode == 0
    dup = _cli(["add", "marta", "--role", "rater", "--password-stdin"], url, stdin="una clave segura\n")
    assert dup.returncode == 2 and "Ya existe" in dup.stderr
    short = _cli(["add", "sara", "--role", "rater", "--password-stdin"], url, stdin="corta\n")
    assert short.returncode == 2 and "demasiado corta" in short.stderr
    listed = _cli(["list"], url)
    assert listed.returncode == 0
    rows = [line.split("\t")[:3] for line in listed.stdout.splitlines()]
    assert rows == [["marta", "admin", "activo"], ["raul", "rater", "activo"]]
    # the CLI upgraded the schema itself, and the password (spaces included, newline not) works
    e = db.make_engine(url)
    try:
        assert db.current_revision(e) == db.head_revision()
        with db.make_sessionmaker(e)() as s:
            assert authenticate(s, "marta", "una clave segura") is not None
            assert authenticate(s, "marta", "una clave segura\n") is None
    finally:
        e.dispose()


def test_users_cli_rejects_an_unknown_role(url, _cli):
    r = _cli(["add", "x-user", "--role", "boss", "--password-stdin"], url, stdin="una clave segura\n")
    assert r.returncode == 2 and "invalid choice" in r.stderr
