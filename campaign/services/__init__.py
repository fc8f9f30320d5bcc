"""The domain: plain functions on a database session. No request or Celery objects in here."""
