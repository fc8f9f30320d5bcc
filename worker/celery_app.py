"""Celery bound to a Flask app built by create_app(), with the tasks registered."""

from campaign import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]

import worker.tasks  # noqa: E402,F401 - registers the tasks on this Celery app
