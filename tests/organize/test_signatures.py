"""The organizer's view of signatures: counts, the list, search by exact email (blind index)
and by name (bounded decryption), invalidation (count, mail, audit), and the audit log."""

from __future__ import annotations

from sqlalchemy import select

from campaign.extensions import db
from campaign.models import AuditEvent, OutboundEmail, Signature
from campaign.services.counting import signature_count
from tests.organize.conftest import csrf_of, login, post
from tests.support import deliver_due


def _count(app, petition_id: int) -> int:
    with app.app_context():
        return signature_count(db.session, petition_id)


def _page(client, petition_id: int, **query) -> str:
    response = client.get(f"/organize/petitions/{petition_id}/signatures", query_string=query)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_counts_and_the_list_of_recent_signatures(org_app, two_sides):
    a, _ = two_sides
    client = org_app.test_client()
    login(client, a.organizer)
    dashboard = client.get(f"/organize/petitions/{a.petition_id}").get_data(as_text=True)
    for label, value in (("Signatures (public count)", 11), ("Confirmed online", 1),
                         ("Waiting for confirmation", 1), ("On paper", 10)):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in dashboard, label
    html = _page(client, a.petition_id)
    assert "Pending Signer a" in html and "Confirmed Signer a" in html
    assert "Signer b" not in html  # another petition's signers never show
    # Addresses only of signers who agreed to hear from the organizers.
    assert "confirmed-a@example.net" in html and "pending-a@example.net" not in html and "p•••@example.net" in html
    assert "2 matching" in html


def test_search_by_exact_email_goes_through_the_blind_index(org_app, two_sides):
    a, _ = two_sides
    client = org_app.test_client()
    login(client, a.organizer)
    found = _page(client, a.petition_id, email="  Pending-A@Example.NET ")
    assert "Pending Signer a" in found and "Confirmed Signer a" not in found and "1 matching" in found
    assert "0 matching" in _page(client, a.petition_id, email="pending-b@example.net")  # B's signer
    partial = _page(client, a.petition_id, email="pending")
    assert "exact addresses only" in partial and "Pending Signer a" not in partial


def test_search_by_name_and_its_limit(make_org_app):
    from tests.organize.conftest import build_side

    app = make_org_app(SIGNATURE_SEARCH_LIMIT=2)
    a = build_side(app, "a")
    client = app.test_client()
    login(client, a.organizer)
    found = _page(client, a.petition_id, name="pending SIGNER")
    assert "Pending Signer a" in found and "Confirmed Signer a" not in found
    assert "Confirmed Signer a" in _page(client, a.petition_id, name="confirmed", status="confirmed")
    app.config["SIGNATURE_SEARCH_LIMIT"] = 1
    too_many = _page(client, a.petition_id, name="signer")
    assert "Narrow it" in too_many and "Signer a</td>" not in too_many
    narrowed = _page(client, a.petition_id, name="signer", status="pending")
    assert "Pending Signer a" in narrowed


def test_invalidating_a_confirmed_signature_stops_counting_it_once(org_app, two_sides):
    a, _ = two_sides
    client = org_app.test_client()
    login(client, a.organizer)
    assert _count(org_app, a.petition_id) == 11
    path = f"/organize/signatures/{a.confirmed_id}/invalidate"
    page = client.get(path).get_data(as_text=True)
    assert "Confirmed Signer a" in page and "the public count drops by one" in page
    missing = client.post(path, data={"csrf_token": csrf_of(page), "reason": ""})
    assert missing.status_code == 400 and _count(org_app, a.petition_id) == 11
    done = client.post(path, data={"csrf_token": csrf_of(page), "reason": "Fake name"})
    assert done.status_code == 303 and _count(org_app, a.petition_id) == 10
    again = client.post(path, data={"csrf_token": csrf_of(page), "reason": "Twice"})
    assert again.status_code == 303 and _count(org_app, a.petition_id) == 10
    with org_app.app_context():
        signature = db.session.get(Signature, a.confirmed_id)
        assert (signature.status, signature.invalidation_reason) == ("invalidated", "Fake name")
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "signature.invalidated"))
        assert event.object_id == a.confirmed_id and "Fake name" in event.summary
        assert "Confirmed Signer" not in event.summary and "example.net" not in event.summary
    listed = _page(client, a.petition_id, status="invalidated")
    assert "Confirmed Signer a" in listed and "Fake name" in listed


def test_an_invalidated_signature_is_never_mailed(org_app, two_sides, mailbox):
    a, _ = two_sides
    client = org_app.test_client()
    login(client, a.organizer)
    page = client.get(f"/organize/signatures/{a.signature_id}/invalidate").get_data(as_text=True)
    client.post(f"/organize/signatures/{a.signature_id}/invalidate",
                data={"csrf_token": csrf_of(page), "reason": "Reported as not theirs"})
    assert _count(org_app, a.petition_id) == 11  # it was never confirmed: the count stays
    deliver_due(org_app)
    recipients = {str(m["To"]).lower() for m in mailbox.messages}
    assert "pending-a@example.net" not in recipients
    assert "pending-b@example.net" in recipients  # the same email for B's signer went out
    with org_app.app_context():
        row = db.session.scalar(select(OutboundEmail).where(OutboundEmail.signature_id == a.signature_id))
        assert row.status == "cancelled"


def test_audit_log_is_for_owners_and_admins_and_names_no_signer(org_app, two_sides):
    a, _ = two_sides
    organizer = org_app.test_client()
    login(organizer, a.organizer)
    page = organizer.get(f"/organize/signatures/{a.confirmed_id}/invalidate").get_data(as_text=True)
    organizer.post(f"/organize/signatures/{a.confirmed_id}/invalidate",
                   data={"csrf_token": csrf_of(page), "reason": "Duplicate"})
    post(organizer, f"/organize/petitions/{a.petition_id}/close")
    assert organizer.get(f"/organize/campaigns/{a.campaign_id}/audit").status_code == 403

    owner = org_app.test_client()
    login(owner, a.owner)
    log = owner.get(f"/organize/campaigns/{a.campaign_id}/audit").get_data(as_text=True)
    for action in ("campaign.created", "petition.created", "offline.added", "member.invited",
                   "signature.invalidated", "petition.closed"):
        assert action in log, action
    assert a.organizer in log  # who
    assert "Signer a" not in log and "@example.net" not in log
    assert "Campaign b" not in log and "Petition b" not in log
