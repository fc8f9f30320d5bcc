"""The Celery entry point: `celery -A worker worker` finds the app here as `celery`."""

from worker.celery_app import celery, flask_app

__all__ = ["celery", "flask_app"]
