"""The dashboard (counts, rate, time, country, source; SVG drawn on the server) and signature
exports (columns, filters, consent, formula neutralization, streaming, audit, background file
behind a signed, expiring link)."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

from sqlalchemy import select

from campaign.extensions import db
from campaign.models import AuditEvent, SignatureExport
from campaign.models.base import utcnow
from campaign.services.csv_safe import read_rows
from campaign.services.exports import run_export
from tests.reach.conftest import World, add_signers, post_form, signed_in


def _populate(world: World) -> None:
    add_signers(world.app, world.petition_id, 30, country="DE", source="newsletter")
    add_signers(world.app, world.petition_id, 12, start=100, country="FR", source="twitter", age=timedelta(days=3))
    add_signers(world.app, world.petition_id, 10, start=200, status="pending", country="FR")
    add_signers(world.app, world.petition_id, 2, start=300, status="held")
    add_signers(world.app, world.other_petition_id, 5, start=400, country="BR")


def test_petition_dashboard_figures_tables_and_charts(world):
    _populate(world)
    client = signed_in(world.app)
    response = client.get(f"/organize/petitions/{world.petition_id}/dashboard")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    stat = dict(re.findall(r'data-stat="(\w+)">([^<]+)<', html))
    assert stat == {"confirmed": "42", "pending": "10", "rate": "80.8%"}
    assert re.search(r"<td>Germany</td><td class=\"num\">30</td>", html)
    assert re.search(r"<td>France</td><td class=\"num\">12</td>", html)
    assert re.search(r"<td>newsletter</td><td class=\"num\">30</td>", html)
    assert "Brazil" not in html  # the other petition's signers
    assert html.count("<svg") == 3 and "<script" not in html.split("</head>")[1]
    # No request leaves for another host: every src and href is our own.
    assert not re.search(r'(?:src|href)="(?:https?:)?//(?!campaign\.test)', html)
    hourly = client.get(f"/organize/petitions/{world.petition_id}/dashboard?by=hour").get_data(as_text=True)
    assert "hour (48 hours)</a>" in hourly and "<svg" in hourly


def test_campaign_dashboard_adds_up_every_petition(world):
    _populate(world)
    html = signed_in(world.app).get(f"/organize/campaigns/{world.campaign_id}/dashboard").get_data(as_text=True)
    assert 'data-stat="confirmed">47<' in html and "<td>Brazil</td>" in html


def _export(client, world: World, **fields):
    data = {"petition_id": "", "columns": ["id", "name", "email", "country", "comment", "consent_updates"],
            "statuses": ["confirmed"], "consent": "any", "format": "csv"} | fields
    return post_form(client, f"/organize/campaigns/{world.campaign_id}/export", data)


def test_csv_export_streams_chosen_columns_with_emails_only_of_consenting_signers(world):
    add_signers(world.app, world.petition_id, 3, country="DE")
    add_signers(world.app, world.petition_id, 2, start=10, consent=False, country="FR")
    add_signers(world.app, world.petition_id, 1, start=20, name="=HYPERLINK(\"http://x\")")
    client = signed_in(world.app)
    response = _export(client, world)
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Disposition"].startswith('attachment; filename="reach-signatures-')
    rows = read_rows(response.get_data(as_text=True))
    assert rows[0] == ["Signature id", "Name", "Email", "Country", "Comment", "Consents to updates"]
    body = {row[1]: row for row in rows[1:]}
    assert len(body) == 6
    assert body["Signer0 Person"][2] == "signer0@example.net"
    assert body["Signer10 Person"][2] == ""  # did not consent: no address
    assert "'=HYPERLINK(\"http://x\")" in body  # neutralized, not a formula
    with world.app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "signatures.export")).one()
        assert "columns id,name,email,country,comment,consent_updates" in event.summary
        assert "signer" not in event.summary


def test_export_filters_by_country_consent_status_and_date_and_writes_json_lines(world):
    add_signers(world.app, world.petition_id, 4, country="DE")
    add_signers(world.app, world.petition_id, 3, start=10, country="FR")
    add_signers(world.app, world.petition_id, 2, start=20, country="FR", consent=False)
    add_signers(world.app, world.petition_id, 2, start=30, country="FR", age=timedelta(days=10))
    add_signers(world.app, world.petition_id, 2, start=40, country="FR", status="pending")
    client = signed_in(world.app)
    since = (utcnow() - timedelta(days=2)).date().isoformat()
    response = _export(client, world, countries=["FR"], consent="yes", since=since, format="jsonl",
                       statuses=["confirmed", "pending"], petition_id=str(world.petition_id))
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert sorted(line["name"] for line in lines) == sorted(
        [f"Signer{n} Person" for n in (10, 11, 12, 40, 41)])
    assert set(lines[0]) == {"id", "name", "email", "country", "comment", "consent_updates"}


def test_bad_export_requests_are_refused_next_to_the_form(world):
    client = signed_in(world.app)
    response = _export(client, world, columns=["id", "password_hash"])
    assert response.status_code == 400
    response = _export(client, world, since="2026-02-01", until="2026-01-01")
    assert response.status_code == 400 and "The first day is after the last day." in response.get_data(as_text=True)


def test_a_background_export_leaves_a_signed_link_that_expires(world):
    add_signers(world.app, world.petition_id, 25)
    world.app.config["EXPORT_LINK_MAX_AGE"] = 2
    client = signed_in(world.app)
    response = _export(client, world, as_file="y")
    assert response.status_code == 303
    export_id = int(response.headers["Location"].rstrip("/").split("/")[-1])
    with world.app.app_context():
        assert run_export(db.session, export_id) == "done"
        assert run_export(db.session, export_id) == "skipped"  # a task delivered twice writes once
        assert db.session.get(SignatureExport, export_id).rows == 25
    page = client.get(f"/organize/exports/{export_id}").get_data(as_text=True)
    link = re.search(r'href="(/organize/exports/\d+/download\?token=[^"]+)"', page).group(1).replace("&amp;", "&")
    download = client.get(link)
    assert download.status_code == 200 and len(read_rows(download.get_data(as_text=True))) == 26
    download.close()
    assert client.get(link[:-4] + "AAAA").status_code == 404  # tampered
    assert world.app.test_client().get(link).status_code in (302, 401)  # signed out: to the sign-in page
    time.sleep(3)
    assert client.get(link).status_code == 404  # expired
    with world.app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.object_id == export_id)).all()
        assert sorted(actions) == ["signatures.export", "signatures.export_download"]


def test_source_codes_from_links_are_escaped_in_tables_and_charts(world):
    add_signers(world.app, world.petition_id, 2, source='<script>alert(1)</script>"')
    html = signed_in(world.app).get(f"/organize/petitions/{world.petition_id}/dashboard").get_data(as_text=True)
    assert "<script>alert(1)" not in html
    assert html.count("&lt;script&gt;alert(1)") >= 2  # the table and the chart's label


def test_an_export_whose_task_was_lost_is_picked_up_again(world):
    from campaign.services.exports import ExportRequest, waiting_exports

    with world.app.app_context():
        job = SignatureExport(campaign_id=world.campaign_id, request=ExportRequest().to_json(),
                              created_at=utcnow() - timedelta(minutes=5))
        fresh = SignatureExport(campaign_id=world.campaign_id, request=ExportRequest().to_json())
        db.session.add_all([job, fresh])
        db.session.commit()
        assert waiting_exports(db.session) == [job.id]
        assert run_export(db.session, job.id) == "done"
        assert waiting_exports(db.session) == []
