"""What the mailing tests share: petitions with chosen targets, signers confirmed through the
real confirmation path, and reading the messages the SMTP sink received."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select

from campaign.models import (
    Campaign,
    MailingPolicy,
    OutboundEmail,
    Petition,
    PetitionTarget,
    Signature,
    SignatureStatus,
    Target,
)
from campaign.models.base import utcnow
from campaign.services.csv_safe import read_rows
from campaign.services.petitions import create_counter_shards
from campaign.services.privacy import cipher
from campaign.services.routing import set_covered_countries, set_routing_fallback
from campaign.services.signing import confirm_signature

LETTER_TEXT = "Dear {title},\n\nPlease act now.\n\nSincerely,"


@dataclass
class TargetSpec:
    name: str
    country: str
    email: str | None = None
    title: str = ""
    default: bool = False
    covers: list[str] = field(default_factory=list)


def make_petition(session: Any, targets: Iterable[TargetSpec] = (), *, policy: str = MailingPolicy.LETTERS,
                  slug: str = "letters-test", sensitive: bool = True, fallback: str | None = None,
                  letter: str = LETTER_TEXT) -> Petition:
    campaign = session.scalar(select(Campaign).where(Campaign.slug == "mailings-test"))
    if campaign is None:
        campaign = Campaign(slug="mailings-test", name="Mailings test", organization="Test Coalition",
                            sender_name="Test Coalition")
        session.add(campaign)
        session.flush()
    petition = Petition(campaign_id=campaign.id, slug=slug, title=f"Petition {slug}", summary="A summary.",
                        body_markdown="Body.", body_html="<p>Body.</p>", letter=letter, language="en",
                        mailing_policy=policy, is_sensitive=sensitive)
    session.add(petition)
    session.flush()
    for position, spec in enumerate(targets):
        email = spec.email if spec.email is not None else f"{spec.name.lower().replace(' ', '.')}@gov.example.org"
        target = Target(name=spec.name, title=spec.title or f"Leader of {spec.country}", country=spec.country,
                        email=email, group_name="test")
        session.add(target)
        session.flush()
        session.add(PetitionTarget(petition_id=petition.id, target_id=target.id, is_default=spec.default,
                                   position=position))
        if spec.covers:
            set_covered_countries(session, target, spec.covers)
    if fallback is not None:
        set_routing_fallback(session, petition, fallback)
    create_counter_shards(session, petition)
    petition.publish()
    session.flush()
    return petition


def add_signer(session: Any, petition: Petition, name: str, email: str, country: str, *, comment: str = "",
               named: bool = False, reply: bool = False, updates: bool = False,
               confirm: bool = True) -> Signature:
    """A signature as the form would store it, then confirmed through confirm_signature (which
    routes it and queues its letters)."""
    crypt = cipher()
    signature = Signature(
        petition_id=petition.id, name_encrypted=crypt.encrypt(name), email_encrypted=crypt.encrypt(email),
        email_index=crypt.blind_index(email.lower()), country=country, comment=comment,
        consent_updates=updates, consent_name_to_targets=named, consent_reply_to=reply,
        status=SignatureStatus.PENDING, created_at=utcnow())
    session.add(signature)
    session.flush()
    if confirm:
        assert confirm_signature(session, signature)
    return signature


def target_named(session: Any, name: str) -> Target:
    target = session.scalar(select(Target).where(Target.name == name))
    assert target is not None, name
    return target


def outbox(session: Any, kind: str) -> list[OutboundEmail]:
    return list(session.scalars(select(OutboundEmail).where(OutboundEmail.kind == kind).order_by(OutboundEmail.id)))


def messages(mailbox: Any) -> list[EmailMessage]:
    with mailbox.lock:
        return list(mailbox.messages)


def plain(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def recipient(message: EmailMessage) -> str:
    addresses = message["To"].addresses
    assert len(addresses) == 1
    return str(addresses[0].addr_spec).lower()


def csv_of(message: EmailMessage) -> list[list[str]]:
    """The rows of the message's CSV attachment, header first."""
    for part in message.iter_attachments():
        if part.get_content_type() == "text/csv":
            data = part.get_payload(decode=True)
            assert isinstance(data, bytes)
            return read_rows(data.decode("utf-8"))
    raise AssertionError("no CSV attachment")


def to_kind(messages: Iterable[EmailMessage], subject_part: str) -> list[EmailMessage]:
    return [m for m in messages if subject_part in str(m["Subject"])]


WORD = re.compile(r"\w+")
