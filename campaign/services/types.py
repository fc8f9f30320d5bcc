"""The session type services accept: a plain Session or Flask-SQLAlchemy's scoped one."""

from typing import Any

from sqlalchemy.orm import Session, scoped_session

DbSession = Session | scoped_session[Any]
