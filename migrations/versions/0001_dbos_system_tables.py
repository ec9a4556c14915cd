"""dbos_system_tables

Revision ID: 0001
Revises: None
"""

from migrations.versions import apply_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(revision)


def downgrade() -> None:
    raise NotImplementedError("kodo migrations are forward-only")
