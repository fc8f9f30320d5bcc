"""Blueprints: public (petition pages, signing, confirming), api (JSON), dev (local mailbox)."""
