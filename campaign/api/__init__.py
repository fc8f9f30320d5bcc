"""The public JSON API's request-free parts: resource shapes (OSDI), cursors and the OpenAPI document.

The views that parse requests live in campaign/web/api.py; nothing here touches flask.request.
"""
