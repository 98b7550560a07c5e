"""SQLAlchemy 2.x models of the evaluation data, plus the two write helpers that
depend on a uniqueness rule: `get_or_create_contestant` and `save_score`/`save_scores`.

Integrity lives in the schema: every rule that a careless caller could break (score 1..5, one score
per answer and criterion, one selected attempt per prompt and contestant, roles, labels) is a CHECK,
UNIQUE or foreign key, so it holds for every writer, not only for this module.
Timestamps are stored in UTC and come back as timezone-aware UTC datetimes, also on SQLite.
Deleting a rating session deletes its contestant slots, raters, assignments and their scores; deleting
anything that scores point at (an answer, a contestant, a user) is refused: deactivate users instead.
Changing a model means a new Alembic revision under db/migrations/versions (see db.py).

The declarative `Base`, its constraint naming convention `NAMING`, the column types `UTCDateTime` and
`PlainText`, and `utcnow` live in esllm/store/base.py (import them from there); every table is defined on that
`Base` here, and `METADATA` is its metadata with every table on it: what Alembic's env and the schema tests
compare the database with.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Iterable, Optional

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, insert, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import flag_modified

from esllm.store.base import Base, PlainText, utcnow

ROLES = ("admin", "rater")  # people; a judge model grades as a user of role "judge" that cannot log in
USER_ROLES = ROLES + ("judge",)
EVAL_KINDS = ("belebele", "judge", "questions", "pictos")
RUN_STATUSES = ("running", "done", "failed")
RUBRIC_MODES = ("general", "full")
SESSION_STATUSES = ("draft", "open", "closed")
LABELS = ("A", "B", "C")
# "general" is the single rubric score; the four aspects are asked separately in "full" mode (§5).
ASPECTS = ("exactitud", "relevancia", "coherencia", "comprension")
CRITERIA = ("general",) + ASPECTS
# The criteria as people read them (screens, tables); files keep the ids in their own column.
CRITERION_LABELS = {"general": "General", "exactitud": "Exactitud", "relevancia": "Relevancia",
                    "coherencia": "Coherencia", "comprension": "Comprensión del contexto"}
VOTE_CHOICES = ("A", "B", "C", "tie", "all_bad")
THUMBS = ("up", "down")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


# ---------------------------------------------------------------- prompts, contestants, answers

class PromptSet(Base):
    __tablename__ = "prompt_set"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(PlainText, default="")
    created_at: Mapped[datetime] = _created()


class Prompt(Base):
    """One item of a set; a contextual series is the prompts sharing `series`, ordered by `turn` (1..)."""

    __tablename__ = "prompt"
    __table_args__ = (
        UniqueConstraint("set_id", "external_id"),
        UniqueConstraint("set_id", "series", "turn"),
        CheckConstraint("turn IS NULL OR turn >= 1", name="turn_positive"),
        CheckConstraint("(series IS NULL) = (turn IS NULL)", name="series_with_turn"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("prompt_set.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(100))  # the id in the bundled/imported file
    category: Mapped[str] = mapped_column(String(100))
    series: Mapped[Optional[str]] = mapped_column(String(100))
    turn: Mapped[Optional[int]]
    text: Mapped[str] = mapped_column(PlainText)
    reference: Mapped[Optional[str]] = mapped_column(PlainText)


class ContestantSnapshot(Base):
    """An immutable snapshot of a contestant as it generated answers (§3).

    The snapshot is unique through `key`, a sha256 of all its fields: a UNIQUE over the fields themselves
    would let duplicates through whenever `adapter` is NULL (NULLs never compare equal) and cannot hold a
    JSON column on PostgreSQL. Use `get_or_create_contestant`, which computes the key.
    """

    __tablename__ = "contestant"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    base: Mapped[str] = mapped_column(String(500))  # hub id, local path or "bundled:…"
    adapter: Mapped[Optional[str]] = mapped_column(String(500))
    adapter_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(100))
    preset: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]]  # the preset's generation kwargs
    created_at: Mapped[datetime] = _created()

    @staticmethod
    def snapshot_key(*, name: str, base: str, adapter: Optional[str], adapter_sha256: Optional[str],
                     template: str, preset: str, params: dict[str, Any]) -> str:
        fields = dict(name=name, base=base, adapter=adapter, adapter_sha256=adapter_sha256,
                      template=template, preset=preset, params=params)
        canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Answer(Base):
    """One generated attempt; `selected` marks the attempt shown to raters (at most one per pair)."""

    __tablename__ = "answer"
    __table_args__ = (
        UniqueConstraint("prompt_id", "contestant_id", "attempt"),
        CheckConstraint("attempt >= 1", name="attempt_positive"),
        CheckConstraint("new_tokens >= 0", name="new_tokens_nonnegative"),
        CheckConstraint("latency_s >= 0", name="latency_nonnegative"),
        Index("uq_answer_selected", "prompt_id", "contestant_id", unique=True,
              sqlite_where=text("selected = 1"), postgresql_where=text("selected")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"))
    contestant_id: Mapped[int] = mapped_column(ForeignKey("contestant.id", ondelete="RESTRICT"), index=True)
    attempt: Mapped[int]
    text: Mapped[str] = mapped_column(PlainText)
    selected: Mapped[bool] = mapped_column(default=False)
    params: Mapped[dict[str, Any]]  # the exact kwargs used (seed included)
    new_tokens: Mapped[int]
    latency_s: Mapped[float]
    ended_on_eos: Mapped[bool]
    finish_reason: Mapped[str] = mapped_column(String(32))  # "eos", "length", "stop", …
    created_at: Mapped[datetime] = _created()


# ---------------------------------------------------------------- users and rating sessions

class User(Base):
    __tablename__ = "users"  # not "user": a reserved word on PostgreSQL
    __table_args__ = (CheckConstraint(_in("role", USER_ROLES), name="role"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)  # lower case, see users.py
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(10))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = _created()


class RatingSession(Base):
    __tablename__ = "rating_session"
    __table_args__ = (
        CheckConstraint(_in("rubric_mode", RUBRIC_MODES), name="rubric_mode"),
        CheckConstraint(_in("status", SESSION_STATUSES), name="status"),
        CheckConstraint("overlap_k >= 1", name="overlap_k_positive"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    prompt_set_id: Mapped[int] = mapped_column(ForeignKey("prompt_set.id", ondelete="RESTRICT"), index=True)
    rubric_mode: Mapped[str] = mapped_column(String(10), default="general")
    overlap_k: Mapped[int] = mapped_column(default=1)  # raters per item
    status: Mapped[str] = mapped_column(String(10), default="draft")
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created()


class SessionContestant(Base):
    __tablename__ = "session_contestant"
    __table_args__ = (
        UniqueConstraint("session_id", "position"),
        UniqueConstraint("session_id", "contestant_id"),
        CheckConstraint("position BETWEEN 0 AND 2", name="position_range"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("rating_session.id", ondelete="CASCADE"))
    contestant_id: Mapped[int] = mapped_column(ForeignKey("contestant.id", ondelete="RESTRICT"), index=True)
    position: Mapped[int]


class SessionRater(Base):
    __tablename__ = "session_rater"
    __table_args__ = (UniqueConstraint("session_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("rating_session.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)


class Assignment(Base):
    """One item for one rater; `permutation` maps the shown labels to contestant ids: {"A": 3, …}."""

    __tablename__ = "assignment"
    __table_args__ = (
        UniqueConstraint("session_id", "rater_id", "prompt_id"),
        UniqueConstraint("session_id", "rater_id", "order_index"),
        # A rater's queue: the next unfinished item is one index seek, progress an index-only count.
        Index("ix_assignment_queue", "session_id", "rater_id", "finished_at", "order_index"),
        CheckConstraint("order_index >= 0", name="order_index_nonnegative"),
        CheckConstraint("seconds_spent IS NULL OR seconds_spent >= 0", name="seconds_nonnegative"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("rating_session.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="RESTRICT"), index=True)
    order_index: Mapped[int]  # 0-based position in the rater's queue
    permutation: Mapped[dict[str, Any]]
    started_at: Mapped[Optional[datetime]]
    finished_at: Mapped[Optional[datetime]]
    seconds_spent: Mapped[Optional[float]]


class Score(Base):
    __tablename__ = "score"
    __table_args__ = (
        UniqueConstraint("assignment_id", "answer_id", "criterion"),
        CheckConstraint(_in("label", LABELS), name="label"),
        CheckConstraint(_in("criterion", CRITERIA), name="criterion"),
        CheckConstraint("value BETWEEN 1 AND 5", name="value_range"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id", ondelete="CASCADE"))
    answer_id: Mapped[int] = mapped_column(ForeignKey("answer.id", ondelete="RESTRICT"), index=True)
    label: Mapped[str] = mapped_column(String(1))  # as shown to the rater
    criterion: Mapped[str] = mapped_column(String(20), default="general")
    value: Mapped[int]
    comment: Mapped[Optional[str]] = mapped_column(PlainText)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# ---------------------------------------------------------------- Comparar votes, chat feedback

class Vote(Base):
    """A Comparar vote; `shown` lists the contestant names in the order A, B, C."""

    __tablename__ = "vote"
    __table_args__ = (CheckConstraint(_in("choice", VOTE_CHOICES), name="choice"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    prompt: Mapped[str] = mapped_column(PlainText)
    shown: Mapped[list[Any]]
    choice: Mapped[str] = mapped_column(String(10))
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    session_hash: Mapped[Optional[str]] = mapped_column(String(100))  # the browser session (anonymous)
    created_at: Mapped[datetime] = _created()


class ChatFeedback(Base):
    """Thumbs up/down on a Conversar answer (exported KTO-style: prompt, completion, label)."""

    __tablename__ = "chat_feedback"
    __table_args__ = (CheckConstraint(_in("thumbs", THUMBS), name="thumbs"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    contestant: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(PlainText)
    answer: Mapped[str] = mapped_column(PlainText)
    thumbs: Mapped[str] = mapped_column(String(4))
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _created()


# ---------------------------------------------------------------- write helpers

def get_or_create_contestant(session: Session, *, name: str, base: str, template: str, preset: str,
                             params: dict[str, Any], adapter: Optional[str] = None,
                             adapter_sha256: Optional[str] = None) -> ContestantSnapshot:
    """The stored snapshot with exactly these fields, added (flushed, not committed) if new."""
    fields = dict(name=name, base=base, adapter=adapter, adapter_sha256=adapter_sha256,
                  template=template, preset=preset, params=params)
    key = ContestantSnapshot.snapshot_key(**fields)
    found = session.scalars(select(ContestantSnapshot).where(ContestantSnapshot.key == key)).first()
    if found is None:
        found = ContestantSnapshot(key=key, **fields)
        session.add(found)
        session.flush()
    return found


def save_score(session: Session, *, assignment_id: int, answer_id: int, label: str, value: int,
               criterion: str = "general", comment: Optional[str] = None) -> Score:
    """Insert the score, or update the existing one for (assignment, answer, criterion) (flushed).

    A resubmit with the same value and comment changes nothing (`updated_at` stays). The database still
    rejects a value outside 1..5 or an unknown label or criterion (IntegrityError on flush).
    """
    save_scores(session, assignment_id=assignment_id, scores=[(answer_id, label, criterion, value)], comment=comment)
    return session.scalars(select(Score).where(Score.assignment_id == assignment_id, Score.answer_id == answer_id,
                                               Score.criterion == criterion)).one()


def save_scores(session: Session, *, assignment_id: int, scores: Iterable[tuple[int, str, str, int]],
                comment: Optional[str] = None) -> None:
    """`save_score` for many (answer_id, label, criterion, value) of one assignment, cheaply: one SELECT of
    the assignment's scores, the new rows in one executemany INSERT (ORM objects would be inserted one
    statement each on SQLite, to read back their ids), the existing ones updated (flushed).

    A resubmit identical to what was read writes nothing; one that changes anything rewrites every existing
    row it names, also those it read as unchanged: another transaction may have changed them since the read,
    and two racing edits must end with one caller's whole set, never a mix of both. (Two racing first saves:
    the second INSERT violates the UNIQUE and raises IntegrityError; `sessions.submit` sorts that out.)"""
    existing = {(sc.answer_id, sc.criterion): sc
                for sc in session.scalars(select(Score).where(Score.assignment_id == assignment_id))}
    new: dict[tuple[int, str], dict[str, Any]] = {}
    update: list[tuple[Score, tuple[str, int, Optional[str]]]] = []
    for answer_id, label, criterion, value in scores:
        score = existing.get((answer_id, criterion))
        if score is None:
            new[answer_id, criterion] = dict(assignment_id=assignment_id, answer_id=answer_id, criterion=criterion,
                                             label=label, value=value, comment=comment)
        else:
            update.append((score, (label, value, comment)))
    if any((sc.label, sc.value, sc.comment) != want for sc, want in update):
        for sc, want in update:
            sc.label, sc.value, sc.comment = want
            for column in ("label", "value", "comment"):
                flag_modified(sc, column)  # written even if equal to what was read
    session.flush()
    if new:
        session.execute(insert(Score), list(new.values()))


# ---------------------------------------------------------------- automatic evaluations

class EvalRun(Base):
    """One automatic evaluation of one contestant, traceable and repeatable.

    `config` holds what is needed to repeat it (input file and its sha256, prompt, parameters, seed…),
    `hashes` what it ran on (base source and fingerprint, adapter path and sha256), `metrics` the
    summary shown in «Resultados», `details` the per-item records.
    """

    __tablename__ = "eval_run"
    __table_args__ = (
        CheckConstraint(_in("kind", EVAL_KINDS), name="kind"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    contestant: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]]
    hashes: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(10), default="running")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    details: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[Optional[str]] = mapped_column(PlainText)
    started_at: Mapped[datetime] = _created()
    finished_at: Mapped[Optional[datetime]]


METADATA = Base.metadata  # every table above (Alembic's env and the schema tests compare the database with it)
