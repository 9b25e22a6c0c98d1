"""Review queue and audit trail.

Revision ID: 0002_review_and_audit
Revises: 0001_initial_schema
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dhash_service.store.models import UtcDateTime

revision: str = "0002_review_and_audit"
down_revision: str | None = "0001_initial_schema"
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", Id, nullable=False),
        sa.Column("image_id", Id, nullable=False),
        sa.Column("candidate_image_id", Id, nullable=True),
        sa.Column("distance", sa.SmallInteger(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(256), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'rejected')", name="ck_review_items_status"
        ),
        sa.ForeignKeyConstraint(
            ["candidate_image_id"],
            ["images.id"],
            name="fk_review_items_candidate_image_id_images",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name="fk_review_items_image_id_images",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_review_items"),
        sa.UniqueConstraint("image_id", name="uq_review_items_image_id"),
    )
    op.create_index("ix_review_items_status_id", "review_items", ["status", "id"])
    op.create_table(
        "audit_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_index("ix_review_items_status_id", table_name="review_items")
    op.drop_table("review_items")
