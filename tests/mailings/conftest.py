"""Fixtures for the mailing tests: an SQLite app whose petition pages are rendered on every view
(so a recorded response shows at once), with an app context and its session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from campaign.extensions import db


@pytest.fixture
def mapp(make_app: Callable[..., Flask]) -> Flask:
    # Argon2 at R35's floor: the demo seed hashes an organizer's password.
    return make_app(PAGE_CACHE_SIZE=0, LETTERS_PER_TARGET_PER_HOUR=50, PASSWORD_HASH_MEMORY_KIB=19456,
                    PASSWORD_HASH_TIME_COST=2, PASSWORD_HASH_PARALLELISM=1)


@pytest.fixture
def session(mapp: Flask) -> Iterator[Any]:
    """The app's session inside an app context; the test commits where a request would."""
    with mapp.app_context():
        yield db.session
        db.session.remove()


@pytest.fixture
def mdemo(mapp: Flask) -> str:
    """The demo campaign (21 G20 leaders, letters per signer) seeded into mapp."""
    from campaign.services.demo import DEMO_PETITION_SLUG, seed_demo

    with mapp.app_context():
        seed_demo(db.session)
        db.session.commit()
    return DEMO_PETITION_SLUG
