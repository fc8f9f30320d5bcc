"""Error pages: calm HTML for people, problem details for the API."""

from __future__ import annotations

from typing import Any

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from campaign.web.api import problem


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if error.response is not None:
            return error.response
        code = error.code or 500
        if request.path.startswith("/api/"):
            return problem(code, error.name, error.description or "")
        description = error.description if code == 400 else None
        return render_template("errors/error.html", code=code, name=error.name,
                               description=description), code

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        return render_template("errors/error.html", code=400, name="Bad Request",
                               description="The form's security token was missing or expired. "
                                           "Go back, reload the page and try again."), 400

    @app.errorhandler(500)
    def server_error(error: Any) -> Any:
        if request.path.startswith("/api/"):
            return problem(500, "Internal Server Error", "Something went wrong on our side.")
        return render_template("errors/error.html", code=500, name="Something went wrong",
                               description=None), 500
