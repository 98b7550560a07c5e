"""Index of a rater's queue: assignment (session_id, rater_id, finished_at, order_index).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Every «Guardar y seguir» asks for the rater's first unfinished assignment in order and for their progress
(finished and total). With only the UNIQUE (session_id, rater_id, order_index) index SQLite walks every
finished item of the rater and reads each row for `finished_at`; with this index the next item is one seek
and progress counts index entries only. A plain index: no batch mode needed on SQLite.
"""
from __future__ import annotations

from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_index("ix_assignment_queue", "assignment", ["session_id", "rater_id", "finished_at", "order_index"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_assignment_queue", table_name="assignment")
