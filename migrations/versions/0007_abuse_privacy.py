"""Abuse resistance and privacy: signers' comments encrypted at rest.

The column keeps its name and type (text); its values become Fernet tokens under the first key
of SIGNER_DATA_KEYS (campaign.models.base.EncryptedText). An empty comment stays empty.
Downgrade decrypts them again.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 13:20:00

"""
from alembic import op
import sqlalchemy as sa

from cryptography.fernet import Fernet, MultiFernet


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_BATCH = 1000


def _fernet():
    # Flask-Migrate runs migrations inside the app: its keys are the ones the code will read with.
    from flask import current_app

    keys = [key.strip() for key in current_app.config["SIGNER_DATA_KEYS"].split(",") if key.strip()]
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _convert(change):
    bind = op.get_bind()
    signatures = sa.table("signatures", sa.column("id", sa.BigInteger), sa.column("comment", sa.Text))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(signatures.c.id, signatures.c.comment)
            .where(signatures.c.id > last, signatures.c.comment != "")
            .order_by(signatures.c.id).limit(_BATCH)).all()
        if not rows:
            return
        for row_id, value in rows:
            bind.execute(signatures.update().where(signatures.c.id == row_id)
                         .values(comment=change(value)))
        last = rows[-1][0]


def upgrade():
    fernet = None

    def encrypt(value):
        nonlocal fernet
        fernet = fernet or _fernet()
        return fernet.encrypt(value.encode("utf-8")).decode("ascii")

    _convert(encrypt)


def downgrade():
    fernet = None

    def decrypt(value):
        nonlocal fernet
        fernet = fernet or _fernet()
        return fernet.decrypt(value.encode("ascii")).decode("utf-8")

    _convert(decrypt)
