"""Initial schema: contents, images, hashes, library membership, matches.

Revision ID: 0001_initial_schema
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dhash_service.store.models import UtcDateTime

revision: str = "0001_initial_schema"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contents",
        sa.Column("id", Id, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("input_kind", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(1024), nullable=True),
        sa.Column("source", sa.String(1024), nullable=True),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contents"),
        sa.UniqueConstraint("sha256", name="uq_contents_sha256"),
    )
    op.create_table(
        "images",
        sa.Column("id", Id, nullable=False),
        sa.Column("content_id", Id, nullable=False),
        sa.Column("locator", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("decision IN ('match', 'review', 'new')", name="ck_images_decision"),
        sa.ForeignKeyConstraint(
            ["content_id"],
            ["contents.id"],
            name="fk_images_content_id_contents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("content_id", "locator", name="uq_images_content_id_locator"),
    )
    op.create_table(
        "hashes",
        sa.Column("id", Id, nullable=False),
        sa.Column("image_id", Id, nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("bits", sa.SmallInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=True),
        sa.Column("wide", sa.LargeBinary(), nullable=True),
        sa.Column("low_information", sa.Boolean(), nullable=False),
        sa.CheckConstraint("(value IS NULL) <> (wide IS NULL)", name="ck_hashes_one_value"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_hashes_image_id_images", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_hashes"),
        sa.UniqueConstraint("image_id", "algorithm", name="uq_hashes_image_id_algorithm"),
    )
    op.create_index("ix_hashes_algorithm_value", "hashes", ["algorithm", "value"])
    op.create_table(
        "library_members",
        sa.Column("id", Id, nullable=False),
        sa.Column("image_id", Id, nullable=False),
        sa.Column("added_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name="fk_library_members_image_id_images",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_library_members"),
        sa.UniqueConstraint("image_id", name="uq_library_members_image_id"),
    )
    op.create_table(
        "matches",
        sa.Column("id", Id, nullable=False),
        sa.Column("query_image_id", Id, nullable=False),
        sa.Column("library_image_id", Id, nullable=False),
        sa.Column("rank", sa.SmallInteger(), nullable=False),
        sa.Column("distance", sa.SmallInteger(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(
            ["library_image_id"],
            ["images.id"],
            name="fk_matches_library_image_id_images",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["query_image_id"],
            ["images.id"],
            name="fk_matches_query_image_id_images",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_matches"),
        sa.UniqueConstraint(
            "query_image_id", "library_image_id", name="uq_matches_query_image_id_library_image_id"
        ),
    )
    op.create_index("ix_matches_library_image_id", "matches", ["library_image_id"])


def downgrade() -> None:
    op.drop_index("ix_matches_library_image_id", table_name="matches")
    op.drop_table("matches")
    op.drop_table("library_members")
    op.drop_index("ix_hashes_algorithm_value", table_name="hashes")
    op.drop_table("hashes")
    op.drop_table("images")
    op.drop_table("contents")
