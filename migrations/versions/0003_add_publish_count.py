"""add_publish_count

Revision ID: 0003
Revises: 0002
"""

from migrations.versions import apply_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(revision)


def downgrade() -> None:
    raise NotImplementedError("kodo migrations are forward-only")
