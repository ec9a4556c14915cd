"""typed_waits_and_step_attempts

Revision ID: 0005
Revises: 0004
"""

from migrations.versions import apply_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(revision)


def downgrade() -> None:
    raise NotImplementedError("kodo migrations are forward-only")
