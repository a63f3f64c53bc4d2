"""checkpoint permissions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 05:22:21.149597
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_permissions",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_checkpoint_permissions_checkpoint_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["tenants.id"],
            name=op.f("fk_checkpoint_permissions_project_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_checkpoint_permissions")),
        sa.UniqueConstraint(
            "checkpoint_id",
            "project_id",
            name=op.f("uq_checkpoint_permissions_checkpoint_id_project_id"),
        ),
        sa.UniqueConstraint("id", name=op.f("uq_checkpoint_permissions_id")),
    )
    with op.batch_alter_table("checkpoint_permissions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_checkpoint_permissions_checkpoint_seq", ["checkpoint_id", "seq"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_checkpoint_permissions_project_id"), ["project_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("checkpoint_permissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoint_permissions_project_id"))
        batch_op.drop_index("ix_checkpoint_permissions_checkpoint_seq")

    op.drop_table("checkpoint_permissions")
