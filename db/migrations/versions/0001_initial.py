"""Initial schema: prompts, contestants, answers, users, rating sessions, scores, votes, chat feedback.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written from an autogenerate run over esllm/store/models.py, then reordered and tidied by hand.
Types are spelled out here (no imports from esllm) so this revision never changes when the models do.
Constraint names follow models.NAMING; tests/test_store.py checks that head equals the models.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _utc(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], ondelete=ondelete,
                                   name=op.f(f"fk_{table}_{column}_{target}"))


def _index(table: str, column: str) -> None:
    op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def upgrade() -> None:
    # ---- prompts, contestants, answers
    op.create_table(
        "prompt_set",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_set")),
        sa.UniqueConstraint("name", name=op.f("uq_prompt_set_name")),
    )
    op.create_table(
        "prompt",
        _id(),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(100), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("series", sa.String(100), nullable=True),
        sa.Column("turn", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.CheckConstraint("turn IS NULL OR turn >= 1", name=op.f("ck_prompt_turn_positive")),
        sa.CheckConstraint("(series IS NULL) = (turn IS NULL)", name=op.f("ck_prompt_series_with_turn")),
        _fk("prompt", "set_id", "prompt_set", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt")),
        sa.UniqueConstraint("set_id", "external_id", name=op.f("uq_prompt_set_id_external_id")),
        sa.UniqueConstraint("set_id", "series", "turn", name=op.f("uq_prompt_set_id_series_turn")),
    )
    _index("prompt", "set_id")
    op.create_table(
        "contestant",
        _id(),
        sa.Column("key", sa.String(64), nullable=False),  # sha256 of the snapshot fields
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("base", sa.String(500), nullable=False),
        sa.Column("adapter", sa.String(500), nullable=True),
        sa.Column("adapter_sha256", sa.String(64), nullable=True),
        sa.Column("template", sa.String(100), nullable=False),
        sa.Column("preset", sa.String(100), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contestant")),
        sa.UniqueConstraint("key", name=op.f("uq_contestant_key")),
    )
    _index("contestant", "name")
    op.create_table(
        "answer",
        _id(),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("contestant_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("selected", sa.Boolean(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("new_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_s", sa.Double(), nullable=False),
        sa.Column("ended_on_eos", sa.Boolean(), nullable=False),
        sa.Column("finish_reason", sa.String(32), nullable=False),
        _utc("created_at"),
        sa.CheckConstraint("attempt >= 1", name=op.f("ck_answer_attempt_positive")),
        sa.CheckConstraint("new_tokens >= 0", name=op.f("ck_answer_new_tokens_nonnegative")),
        sa.CheckConstraint("latency_s >= 0", name=op.f("ck_answer_latency_nonnegative")),
        _fk("answer", "prompt_id", "prompt", "CASCADE"),
        _fk("answer", "contestant_id", "contestant", "RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answer")),
        sa.UniqueConstraint("prompt_id", "contestant_id", "attempt",
                            name=op.f("uq_answer_prompt_id_contestant_id_attempt")),
    )
    _index("answer", "contestant_id")
    # at most one selected attempt per (prompt, contestant)
    op.create_index("uq_answer_selected", "answer", ["prompt_id", "contestant_id"], unique=True,
                    sqlite_where=sa.text("selected = 1"), postgresql_where=sa.text("selected"))

    # ---- users and rating sessions
    op.create_table(
        "users",
        _id(),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _utc("created_at"),
        sa.CheckConstraint("role IN ('admin', 'rater')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "rating_session",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("prompt_set_id", sa.Integer(), nullable=False),
        sa.Column("rubric_mode", sa.String(10), nullable=False),
        sa.Column("overlap_k", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        _utc("created_at"),
        sa.CheckConstraint("rubric_mode IN ('general', 'full')", name=op.f("ck_rating_session_rubric_mode")),
        sa.CheckConstraint("status IN ('draft', 'open', 'closed')", name=op.f("ck_rating_session_status")),
        sa.CheckConstraint("overlap_k >= 1", name=op.f("ck_rating_session_overlap_k_positive")),
        _fk("rating_session", "prompt_set_id", "prompt_set", "RESTRICT"),
        _fk("rating_session", "created_by", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rating_session")),
        sa.UniqueConstraint("name", name=op.f("uq_rating_session_name")),
    )
    _index("rating_session", "prompt_set_id")
    op.create_table(
        "session_contestant",
        _id(),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("contestant_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.CheckConstraint("position BETWEEN 0 AND 2", name=op.f("ck_session_contestant_position_range")),
        _fk("session_contestant", "session_id", "rating_session", "CASCADE"),
        _fk("session_contestant", "contestant_id", "contestant", "RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_contestant")),
        sa.UniqueConstraint("session_id", "position", name=op.f("uq_session_contestant_session_id_position")),
        sa.UniqueConstraint("session_id", "contestant_id",
                            name=op.f("uq_session_contestant_session_id_contestant_id")),
    )
    _index("session_contestant", "contestant_id")
    op.create_table(
        "session_rater",
        _id(),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _fk("session_rater", "session_id", "rating_session", "CASCADE"),
        _fk("session_rater", "user_id", "users", "RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_rater")),
        sa.UniqueConstraint("session_id", "user_id", name=op.f("uq_session_rater_session_id_user_id")),
    )
    _index("session_rater", "user_id")
    op.create_table(
        "assignment",
        _id(),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("order_index", sa.Integer(), nullable=False),
        sa.Column("permutation", sa.JSON(), nullable=False),  # {"A": contestant_id, "B": …, "C": …}
        _utc("started_at", nullable=True),
        _utc("finished_at", nullable=True),
        sa.Column("seconds_spent", sa.Double(), nullable=True),
        sa.CheckConstraint("order_index >= 0", name=op.f("ck_assignment_order_index_nonnegative")),
        sa.CheckConstraint("seconds_spent IS NULL OR seconds_spent >= 0",
                           name=op.f("ck_assignment_seconds_nonnegative")),
        _fk("assignment", "session_id", "rating_session", "CASCADE"),
        _fk("assignment", "rater_id", "users", "RESTRICT"),
        _fk("assignment", "prompt_id", "prompt", "RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment")),
        sa.UniqueConstraint("session_id", "rater_id", "prompt_id",
                            name=op.f("uq_assignment_session_id_rater_id_prompt_id")),
        sa.UniqueConstraint("session_id", "rater_id", "order_index",
                            name=op.f("uq_assignment_session_id_rater_id_order_index")),
    )
    _index("assignment", "rater_id")
    _index("assignment", "prompt_id")
    op.create_table(
        "score",
        _id(),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("answer_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(1), nullable=False),
        sa.Column("criterion", sa.String(20), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        _utc("created_at"),
        _utc("updated_at"),
        sa.CheckConstraint("label IN ('A', 'B', 'C')", name=op.f("ck_score_label")),
        sa.CheckConstraint("criterion IN ('general', 'exactitud', 'relevancia', 'coherencia', 'comprension')",
                           name=op.f("ck_score_criterion")),
        sa.CheckConstraint("value BETWEEN 1 AND 5", name=op.f("ck_score_value_range")),
        _fk("score", "assignment_id", "assignment", "CASCADE"),
        _fk("score", "answer_id", "answer", "RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score")),
        sa.UniqueConstraint("assignment_id", "answer_id", "criterion",
                            name=op.f("uq_score_assignment_id_answer_id_criterion")),
    )
    _index("score", "answer_id")

    # ---- Comparar votes, chat feedback
    op.create_table(
        "vote",
        _id(),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("shown", sa.JSON(), nullable=False),  # contestant names in the order A, B, C
        sa.Column("choice", sa.String(10), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("session_hash", sa.String(100), nullable=True),
        _utc("created_at"),
        sa.CheckConstraint("choice IN ('A', 'B', 'C', 'tie', 'all_bad')", name=op.f("ck_vote_choice")),
        _fk("vote", "user_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vote")),
    )
    _index("vote", "user_id")
    op.create_table(
        "chat_feedback",
        _id(),
        sa.Column("contestant", sa.String(100), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("thumbs", sa.String(4), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        _utc("created_at"),
        sa.CheckConstraint("thumbs IN ('up', 'down')", name=op.f("ck_chat_feedback_thumbs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_feedback")),
    )


def downgrade() -> None:
    # children first; dropping a table drops its indexes
    for table in ("chat_feedback", "vote", "score", "assignment", "session_rater", "session_contestant",
                  "rating_session", "users", "answer", "contestant", "prompt", "prompt_set"):
        op.drop_table(table)
