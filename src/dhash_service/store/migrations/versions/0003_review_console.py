"""Review console: thumbnails, claims, skips and reviewer sessions (expand-only).

Revision ID: 0003_review_console
Revises: 0002_review_and_audit
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dhash_service.store.models import UtcDateTime

revision: str = "0003_review_console"
down_revision: str | None = "0002_review_and_audit"
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "thumbnails",
        sa.Column("image_id", Id, nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("width", sa.SmallInteger(), nullable=False),
        sa.Column("height", sa.SmallInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_thumbnails_image_id_images", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("image_id", name="pk_thumbnails"),
    )
    op.create_table(
        "review_claims",
        sa.Column("review_id", Id, nullable=False),
        sa.Column("reviewer", sa.String(256), nullable=False),
        sa.Column("claimed_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["review_items.id"],
            name="fk_review_claims_review_id_review_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("review_id", name="pk_review_claims"),
    )
    op.create_index("ix_review_claims_reviewer", "review_claims", ["reviewer"])
    op.create_table(
        "review_skips",
        sa.Column("review_id", Id, nullable=False),
        sa.Column("reviewer", sa.String(256), nullable=False),
        sa.Column("skipped_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["review_items.id"],
            name="fk_review_skips_review_id_review_items",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("review_id", "reviewer", name="pk_review_skips"),
    )
    op.create_table(
        "reviewer_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(256), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reviewer_sessions"),
    )
    op.create_index("ix_reviewer_sessions_expires_at", "reviewer_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_reviewer_sessions_expires_at", table_name="reviewer_sessions")
    op.drop_table("reviewer_sessions")
    op.drop_table("review_skips")
    op.drop_index("ix_review_claims_reviewer", table_name="review_claims")
    op.drop_table("review_claims")
    op.drop_table("thumbnails")
