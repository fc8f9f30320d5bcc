"""Targets' responses: the organizer records what a leader answered, the petition page shows a
scoreboard, and the signers routed to that leader who asked for updates get an email about their
own leader's answer (leader_response, one per signature and response, fanned out in chunks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select, update

from campaign.mail.messages import Draft
from campaign.models import (
    OutboundEmail,
    Petition,
    RoutedSignature,
    Signature,
    SignatureStatus,
    Stance,
    Target,
    TargetResponse,
    User,
)
from campaign.models.base import utcnow
from campaign.services.letters import one_line, paragraphs
from campaign.services.outbox import message_kind, queue_email
from campaign.services.petitions import absolute_url, petition_targets
from campaign.services.privacy import cipher
from campaign.services.supporters import my_data_path
from campaign.services.types import DbSession
from campaign.services.updates import unsubscribe_headers, unsubscribe_link

LEADER_RESPONSE = "leader_response"
TEXT_LIMIT = 5000

STANCE_LABELS = {
    Stance.SUPPORTS: "Supports the petition",
    Stance.PARTLY: "Partly supports it",
    Stance.NONCOMMITTAL: "Answered without taking a position",
    Stance.OPPOSES: "Opposes it",
    Stance.DECLINED: "Declined to act",
}


class ResponseError(ValueError):
    """A response that cannot be recorded as given; the message fits next to the field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def stance_label(stance: str) -> str:
    try:
        return STANCE_LABELS[Stance(stance)]
    except ValueError:
        return stance


def _clean_link(link: str) -> str:
    link = link.strip()
    if not link:
        return ""
    parts = urlsplit(link)
    if parts.scheme not in {"http", "https"} or not parts.netloc or any(ch in link for ch in "\r\n\t <>\"'"):
        raise ResponseError("Enter a web address starting with https:// or http://.", "link")
    if len(link) > 500:
        raise ResponseError("Use a web address of at most 500 characters.", "link")
    return link


def record_response(session: DbSession, actor: User | None, petition: Petition, target_id: int, *,
                    responded_on: date, stance: str, text: str = "", link: str = "",
                    today: date | None = None) -> TargetResponse:
    """Record a target's answer, in the caller's transaction; the signers routed to that target
    who consented to updates are told by the deliveries job (notify_responses). Raises
    ResponseError (LookupError when the target is not the petition's)."""
    from campaign.services.audit import record

    if target_id not in {t.id for t in petition_targets(session, petition.id)}:
        raise LookupError("not a target of this petition")
    today = today or utcnow().date()
    if responded_on > today + timedelta(days=1):
        raise ResponseError("The date of the answer cannot be in the future.", "responded_on")
    try:
        value = Stance(stance)
    except ValueError:
        raise ResponseError("Choose what the answer says.", "stance") from None
    text = text.replace("\r\n", "\n").strip()
    if len(text) > TEXT_LIMIT:
        raise ResponseError(f"Use at most {TEXT_LIMIT:,} characters.", "text")
    clean = _clean_link(link)
    if not text and not clean:
        raise ResponseError("Give the answer's text or a link to it.", "text")
    response = TargetResponse(petition_id=petition.id, target_id=target_id, responded_on=responded_on,
                              stance=value, text=text, link=clean,
                              recorded_by_id=actor.id if actor is not None else None,
                              notify_pending=True, notify_cursor=0, notified=0)
    session.add(response)
    session.flush()
    target = session.get(Target, target_id)
    record(session, actor, "target.response_recorded", campaign_id=petition.campaign_id,
           object_type="target_response", object_id=response.id,
           summary=f"{target.name if target else target_id} on {petition.title}: {value}")
    return response


def delete_response(session: DbSession, actor: User | None, response: TargetResponse) -> None:
    """Remove a recorded response (a mistake). Emails already queued about it are cancelled at
    send time, since their builder no longer finds it."""
    from campaign.services.audit import record

    petition = session.get(Petition, response.petition_id)
    record(session, actor, "target.response_deleted", campaign_id=petition.campaign_id if petition else None,
           object_type="target_response", object_id=response.id)
    session.delete(response)
    session.flush()


def responses_of(session: DbSession, petition_id: int) -> list[TargetResponse]:
    return list(session.scalars(select(TargetResponse).where(TargetResponse.petition_id == petition_id)
                                .order_by(TargetResponse.responded_on.desc(), TargetResponse.id.desc())))


@dataclass(frozen=True)
class ScoreRow:
    target: Target
    response: TargetResponse | None  # the latest

    @property
    def answered(self) -> bool:
        return self.response is not None

    @property
    def stance_label(self) -> str:
        return stance_label(self.response.stance) if self.response is not None else ""


@dataclass(frozen=True)
class Scoreboard:
    rows: list[ScoreRow]

    @property
    def answered(self) -> list[ScoreRow]:
        return [row for row in self.rows if row.answered]

    @property
    def waiting(self) -> list[ScoreRow]:
        return [row for row in self.rows if not row.answered]


def scoreboard(session: DbSession, petition_id: int) -> Scoreboard:
    """Every target of the petition with its latest response, if any."""
    latest: dict[int, TargetResponse] = {}
    for response in responses_of(session, petition_id):
        latest.setdefault(response.target_id, response)
    return Scoreboard([ScoreRow(t, latest.get(t.id)) for t in petition_targets(session, petition_id)])


# --- telling the signers ----------------------------------------------------------------------------

def notify_responses(session: DbSession, chunk: int = 1000, max_chunks: int = 1) -> int:
    """Queue leader_response emails for recorded responses, a chunk at a time: each chunk claims
    the response's cursor (a signature id) with a conditional UPDATE and adds one outbox row per
    signer (key response:<signature>:<response>), so two runs never queue one twice. The caller
    commits. Returns how many emails were queued."""
    queued = 0
    for _ in range(max_chunks):
        pending = list(session.scalars(select(TargetResponse).where(TargetResponse.notify_pending.is_(True))
                                       .order_by(TargetResponse.id).limit(20)))
        if not pending:
            break
        for response in pending:
            queued += _notify_chunk(session, response, chunk)
    return queued


def _notify_chunk(session: DbSession, response: TargetResponse, chunk: int) -> int:
    rows = session.execute(
        select(Signature.id, Signature.email_index)
        .join(RoutedSignature, RoutedSignature.signature_id == Signature.id)
        .where(RoutedSignature.petition_id == response.petition_id,
               RoutedSignature.target_id == response.target_id,
               Signature.status == SignatureStatus.CONFIRMED, Signature.consent_updates.is_(True),
               Signature.anonymized_at.is_(None), Signature.id > response.notify_cursor)
        .order_by(Signature.id).limit(chunk)).all()
    done = len(rows) < chunk
    claimed = session.execute(
        update(TargetResponse)
        .where(TargetResponse.id == response.id, TargetResponse.notify_cursor == response.notify_cursor,
               TargetResponse.notify_pending.is_(True))
        .values(notify_cursor=rows[-1][0] if rows else response.notify_cursor,
                notified=TargetResponse.notified + len(rows), notify_pending=not done)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(response)
        return 0
    queued = 0
    for signature_id, email_index in rows:
        row = queue_email(session, kind=LEADER_RESPONSE, key=f"response:{signature_id}:{response.id}",
                          petition_id=response.petition_id, signature_id=signature_id,
                          target_id=response.target_id, recipient_index=email_index)
        queued += row is not None
    session.refresh(response)
    return queued


@message_kind(LEADER_RESPONSE)
def leader_response_email(session: DbSession, row: OutboundEmail) -> Draft | None:
    """To one signer: what the leader their letter went to answered. Cancelled when the
    response was deleted, or the signer is no longer confirmed or no longer wants updates."""
    parts = row.idempotency_key.split(":")
    if len(parts) != 3 or not parts[2].isdigit() or row.signature_id is None:
        return None
    response = session.get(TargetResponse, int(parts[2]))
    signature = session.get(Signature, row.signature_id)
    if response is None or signature is None:
        return None
    if (signature.status != SignatureStatus.CONFIRMED or not signature.consent_updates
            or signature.anonymized_at is not None):
        return None
    petition = session.get(Petition, signature.petition_id)
    target = session.get(Target, response.target_id)
    if petition is None or target is None:
        return None
    crypt = cipher()
    # News the signer asked for: the campaign's one-click unsubscribe, as on supporter updates.
    unsubscribe = unsubscribe_link(petition.campaign_id, signature.email_index)
    return Draft(
        kind=LEADER_RESPONSE,
        to_name=crypt.decrypt(signature.name_encrypted),
        to_address=crypt.decrypt(signature.email_encrypted),
        # Neutral, like every subject to a signer: the topic stays in the body.
        subject="An answer to the letter you signed",
        sender_name=petition.campaign.sender_name,
        headers=unsubscribe_headers(unsubscribe),
        context={
            "unsubscribe_url": unsubscribe,
            "name": one_line(crypt.decrypt(signature.name_encrypted), 100),
            "petition": petition,
            "target": target,
            "response": response,
            "stance": stance_label(response.stance),
            "text": paragraphs(response.text),
            "organization": petition.campaign.organization,
            "petition_url": absolute_url(f"/petitions/{petition.slug}"),
            # Issue 5: manage-my-data from every supporter email.
            "manage_url": absolute_url(my_data_path(signature.email_index, signature.locale)),
        },
    )

