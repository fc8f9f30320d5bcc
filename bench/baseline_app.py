"""The benchmarks' floor: a bare Flask app under the same gunicorn settings as the real one.

- GET /petitions/<slug>: a trivial page with a hidden form_token, so clients behave as on the
  real page (GET, parse, POST);
- POST /petitions/<slug>/sign: one INSERT of (petition, email, name, time) into a table with a
  unique index on (petition, email), then 200;
- GET /static-page: render_template of a static template (bench/page.py writes a copy of the
  real petition page's HTML there, so both routes send the same bytes);
- GET /healthz.

Run by the bench scripts as `gunicorn -c gunicorn.conf.py "bench.baseline_app:create_baseline_app()"` with
BASELINE_DATABASE_URL (and BASELINE_TEMPLATES for the static page) in the environment.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from flask import Flask, render_template, request
from sqlalchemy import create_engine, text

from campaign.config import database_url

TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS baseline_signatures (id bigserial PRIMARY KEY, petition text NOT NULL, "
    "email text NOT NULL, name text NOT NULL, created_at timestamptz NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS baseline_signatures_petition_email "
    "ON baseline_signatures (petition, email)",
)
PAGE = ('<!doctype html><title>Sign</title><form method="post" action="/petitions/{slug}/sign">'
        '<input id="form_token" name="form_token" type="hidden" value="baseline-token">'
        '<input name="name"><input name="email"><button>Sign</button></form>')


def create_baseline_app() -> Flask:
    app = Flask(__name__, template_folder=os.environ.get("BASELINE_TEMPLATES") or "templates")
    engine = create_engine(
        database_url(os.environ["BASELINE_DATABASE_URL"]), pool_pre_ping=True,
        pool_size=int(os.environ.get("SQLALCHEMY_POOL_SIZE", "5")),
        max_overflow=int(os.environ.get("SQLALCHEMY_MAX_OVERFLOW", "10")))
    insert = text("INSERT INTO baseline_signatures (petition, email, name, created_at) "
                  "VALUES (:petition, :email, :name, :created_at)")

    @app.get("/petitions/<slug>")
    def page(slug: str) -> str:
        return PAGE.format(slug=slug)

    @app.post("/petitions/<slug>/sign")
    def sign(slug: str) -> tuple[str, int]:
        with engine.begin() as connection:
            connection.execute(insert, {"petition": slug, "email": request.form["email"],
                                        "name": request.form["name"], "created_at": datetime.now(UTC)})
        return "signed", 200

    @app.get("/static-page")
    def static_page() -> str:
        return render_template("static.html")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app



