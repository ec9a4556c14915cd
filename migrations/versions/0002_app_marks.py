"""app_marks

Revision ID: 0002
Revises: '0001'
"""

from migrations.versions import apply_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(revision)


def downgrade() -> None:
    raise NotImplementedError("kodo migrations are forward-only")
