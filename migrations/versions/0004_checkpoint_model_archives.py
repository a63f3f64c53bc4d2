"""checkpoint model-only archives

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00.000000

A checkpoint is stored as two archives (issue 19): the full-state one (`storage_key`, for
resume) and a model-only one that users download. The columns are nullable: a checkpoint
registered before this revision has no model-only archive. A downgrade forgets the model-only
archives (their files stay in storage, under `checkpoints/<job id>/`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_storage_key", sa.String(length=512),
                                      nullable=True))
        batch_op.add_column(sa.Column("model_size", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("model_sha256")
        batch_op.drop_column("model_size")
        batch_op.drop_column("model_storage_key")
