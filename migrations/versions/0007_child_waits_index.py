"""child_waits_index

Revision ID: 0007
Revises: 0006
"""

from migrations.versions import apply_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(revision)


def downgrade() -> None:
    raise NotImplementedError("kodo migrations are forward-only")
