"""${message}"""

from __future__ import annotations

from alembic import op

from rmp.migrations import apply_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "raise NotImplementedError('apply the new sql/ files here')"}


def downgrade() -> None:
    ${downgrades if downgrades else "raise NotImplementedError('undo the upgrade here')"}
