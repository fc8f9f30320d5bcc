"""Routing tables: country -> targets, targets covering several countries, the fallback to all,
default or no targets, a petition with no targets."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from campaign.models import MailingPolicy, RoutedSignature, RouteVia, RoutingFallback, Signature, Target
from campaign.services.letters import letter_recipients
from campaign.services.routing import deliverable_address, route, routing_table, set_covered_countries
from tests.mailings.helpers import TargetSpec, add_signer, make_petition, target_named

G3 = [TargetSpec("Merz", "DE"), TargetSpec("Macron", "FR"),
      TargetSpec("Costa", "EU", default=True, covers=["AT", "BE", "DE", "ES", "FR", "IT"]),
      TargetSpec("Ramaphosa", "ZA", default=True)]


def names(targets) -> list[str]:
    return [t.name for t in targets]


@pytest.mark.parametrize(("fallback", "unknown"), [
    (RoutingFallback.DEFAULTS, ["Costa", "Ramaphosa"]),
    (RoutingFallback.ALL, ["Merz", "Macron", "Costa", "Ramaphosa"]),
    (RoutingFallback.NOBODY, []),
])
def test_routing_table(session, fallback, unknown) -> None:
    petition = make_petition(session, G3, fallback=fallback)
    table = routing_table(session, petition.id, ["DE", "FR", "AT", "ZA", "BR"])
    assert {country: names(targets) for country, targets in table.items()} == {
        "DE": ["Merz", "Costa"],   # its own leader, and the EU, which covers Germany too
        "FR": ["Macron", "Costa"],
        "AT": ["Costa"],           # covered only by the EU
        "ZA": ["Ramaphosa"],
        "BR": unknown,             # no target covers Brazil: the fallback decides
    }


def test_defaults_are_the_default_fallback_and_no_defaults_means_nobody(session) -> None:
    petition = make_petition(session, [TargetSpec("Merz", "DE"), TargetSpec("Macron", "FR")])
    assert names(route(session, petition.id, "DE")) == ["Merz"]
    assert route(session, petition.id, "BR") == []


def test_a_petition_with_no_targets_routes_nobody_and_confirms_fine(session) -> None:
    petition = make_petition(session, [], fallback=RoutingFallback.ALL)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE", named=True)
    session.commit()
    assert session.get(Signature, signature.id).status == "confirmed"
    assert session.get(Signature, signature.id).routed_at is not None
    assert session.scalars(select(RoutedSignature)).all() == []
    assert letter_recipients(session, signature) == []


def test_covered_countries_are_checked_and_replaced(session) -> None:
    make_petition(session, G3)
    costa = target_named(session, "Costa")
    with pytest.raises(ValueError, match="XX"):
        set_covered_countries(session, costa, ["de", "XX"])
    # Lower case and spaces are fine; the target's own code is implied, not stored.
    assert set_covered_countries(session, costa, [" pt ", "EU"]) == ["PT"]


def test_replacing_covered_countries_changes_the_routes(session) -> None:
    petition = make_petition(session, G3)
    costa = target_named(session, "Costa")
    assert set_covered_countries(session, costa, ["pt", "pl"]) == ["PL", "PT"]
    assert names(route(session, petition.id, "PT")) == ["Costa"]
    assert names(route(session, petition.id, "AT")) == ["Costa", "Ramaphosa"]  # defaults now


def test_signer_is_routed_once_to_each_target_and_recipients_name_them(session) -> None:
    petition = make_petition(session, G3, policy=MailingPolicy.BOTH)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE")
    session.commit()
    routed = session.execute(select(RoutedSignature.target_id, RoutedSignature.via)
                             .order_by(RoutedSignature.id)).all()
    assert [(session.get_one(Target, t).name, v) for t, v in routed] == [
        ("Merz", RouteVia.LETTER), ("Costa", RouteVia.LETTER)]
    assert names(letter_recipients(session, signature)) == ["Merz", "Costa"]


def test_a_pending_signer_is_told_where_the_letter_would_go(session) -> None:
    petition = make_petition(session, G3)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "FR", confirm=False)
    assert names(letter_recipients(session, signature)) == ["Macron", "Costa"]
    assert session.scalars(select(RoutedSignature)).all() == []


def test_a_petition_that_sends_no_mail_routes_nothing(session) -> None:
    petition = make_petition(session, G3, policy=MailingPolicy.NONE)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert session.scalars(select(RoutedSignature)).all() == []
    assert letter_recipients(session, signature) == []


@pytest.mark.parametrize(("address", "ok"), [
    ("leader@gov.example.org", True), ("", False), ("not an address", False), ("a@b", False),
    ("leader@gov.example.org\r\nBcc: x@y.org", False), ("x@localhost", False),
])
def test_deliverable_address(address, ok) -> None:
    assert deliverable_address(address) is ok
