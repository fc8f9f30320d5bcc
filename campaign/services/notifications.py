"""What each kind of email says and to whom, built at send time from the rows it refers to."""

from __future__ import annotations

from flask_babel import force_locale, gettext

from campaign.mail.messages import Draft
from campaign.models import OutboundEmail, Petition, Signature, SignatureStatus
from campaign.services.abuse import public_state
from campaign.services.counting import signature_count
from campaign.services.letters import letter_recipients
from campaign.services.outbox import message_kind
from campaign.services.petitions import absolute_url, petition_targets
from campaign.services.privacy import cipher
from campaign.services.signing import ALREADY_CONFIRMED, CONFIRMATION, confirmation_token
from campaign.services.supporters import my_data_path, title_in
from campaign.services.types import DbSession


def _signer_context(session: DbSession, row: OutboundEmail) -> tuple[Signature, Petition, str, str] | None:
    if row.signature_id is None:
        return None
    signature = session.get(Signature, row.signature_id)
    if signature is None:
        return None
    petition = session.get(Petition, signature.petition_id)
    if petition is None:
        return None
    crypt = cipher()
    return signature, petition, crypt.decrypt(signature.name_encrypted), crypt.decrypt(
        signature.email_encrypted)


@message_kind(CONFIRMATION)
def signature_confirmation(session: DbSession, row: OutboundEmail) -> Draft | None:
    found = _signer_context(session, row)
    if found is None:
        return None
    signature, petition, name, address = found
    # A held signature is mailed as if pending (a bot must not learn it was held).
    if public_state(signature) != SignatureStatus.PENDING:
        return None  # confirmed by an earlier email, or invalidated since
    with force_locale(signature.locale):
        # Neutral subject: the topic stays in the body, away from notification previews.
        subject = gettext("Please confirm your signature")
    return Draft(
        kind=CONFIRMATION,
        to_name=name,
        to_address=address,
        subject=subject,
        locale=signature.locale,
        sender_name=petition.campaign.sender_name,
        context={
            "name": name,
            "petition": petition, "petition_title": title_in(session, petition, signature.locale),
            "organization": petition.campaign.organization,
            "confirm_url": absolute_url(f"/confirm/{confirmation_token(signature)}"),
            "petition_url": absolute_url(f"/petitions/{petition.slug}"),
            # "Your letter goes to <leader>, <title>" (issue 4).
            "letter_targets": letter_recipients(session, signature),
            "manage_url": absolute_url(my_data_path(signature.email_index, signature.locale)),
        },
    )


@message_kind(ALREADY_CONFIRMED)
def signature_already_confirmed(session: DbSession, row: OutboundEmail) -> Draft | None:
    found = _signer_context(session, row)
    if found is None:
        return None
    signature, petition, name, address = found
    if public_state(signature) != SignatureStatus.CONFIRMED:
        return None
    with force_locale(signature.locale):
        subject = gettext("You have already signed")
    return Draft(
        kind=ALREADY_CONFIRMED,
        to_name=name,
        to_address=address,
        subject=subject,
        locale=signature.locale,
        sender_name=petition.campaign.sender_name,
        context={
            "name": name,
            "petition": petition, "petition_title": title_in(session, petition, signature.locale),
            "organization": petition.campaign.organization,
            "count": signature_count(session, petition.id),
            "targets": petition_targets(session, petition.id),
            "petition_url": absolute_url(f"/petitions/{petition.slug}"),
            "manage_url": absolute_url(my_data_path(signature.email_index, signature.locale)),
        },
    )
