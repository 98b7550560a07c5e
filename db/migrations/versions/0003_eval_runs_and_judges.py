"""Automatic evaluations: table eval_run; users may have the role "judge" (a judge model's scores).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

A judge model's grades are stored like a rater's (assignments and scores of a user named after the judge),
so `users.role` admits "judge"; such a user has no usable password. SQLite cannot alter a CHECK in place:
batch mode copies the table.
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.create_check_constraint(op.f("ck_users_role"), "role IN ('admin', 'rater', 'judge')")
    op.create_table(
        "eval_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("contestant", sa.String(length=100), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("hashes", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('belebele', 'judge', 'questions', 'pictos')", name=op.f("ck_eval_run_kind")),
        sa.CheckConstraint("status IN ('running', 'done', 'failed')", name=op.f("ck_eval_run_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_run")),
    )
    op.create_index(op.f("ix_eval_run_kind"), "eval_run", ["kind"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_eval_run_kind"), table_name="eval_run")
    op.drop_table("eval_run")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.create_check_constraint(op.f("ck_users_role"), "role IN ('admin', 'rater')")
