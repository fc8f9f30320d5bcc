"""Supporter emails of issue 5: the manage-my-data link and the one reminder to confirm."""

from __future__ import annotations

from flask import current_app
from flask_babel import force_locale, gettext

from campaign.mail.messages import Draft
from campaign.models import OutboundEmail, Petition, Signature, SignatureStatus
from campaign.services.outbox import message_kind
from campaign.services.petitions import absolute_url
from campaign.services.privacy import cipher
from campaign.services.signing import confirmation_token
from campaign.services.supporters import MY_DATA_LINK, REMINDER, my_data_path, title_in
from campaign.services.types import DbSession


@message_kind(MY_DATA_LINK)
def my_data_link(session: DbSession, row: OutboundEmail) -> Draft | None:
    """The link asked for on /my-data, sent to the address of the mailbox's latest signature."""
    signature = session.get(Signature, row.signature_id) if row.signature_id else None
    if signature is None or signature.anonymized_at is not None:
        return None
    petition = session.get(Petition, signature.petition_id)
    if petition is None:
        return None
    crypt = cipher()
    with force_locale(signature.locale):
        subject = gettext("Your link to manage your data")
    return Draft(
        kind=MY_DATA_LINK, to_name="", to_address=crypt.decrypt(signature.email_encrypted),
        subject=subject, sender_name=petition.campaign.sender_name, locale=signature.locale,
        context={"organization": petition.campaign.organization, "petition": petition,
                 "petition_title": title_in(session, petition, signature.locale),
                 "link_days": max(1, int(current_app.config["MY_DATA_TOKEN_MAX_AGE"]) // 86400),
                 "manage_url": absolute_url(my_data_path(signature.email_index, signature.locale))})


@message_kind(REMINDER)
def signature_reminder(session: DbSession, row: OutboundEmail) -> Draft | None:
    """The one reminder: only while the signature is plainly pending (never held, invalidated,
    deleted or confirmed in the meantime)."""
    signature = session.get(Signature, row.signature_id) if row.signature_id else None
    if signature is None or signature.status != SignatureStatus.PENDING:
        return None
    petition = session.get(Petition, signature.petition_id)
    if petition is None or not petition.is_signable:
        return None
    crypt = cipher()
    name = crypt.decrypt(signature.name_encrypted)
    with force_locale(signature.locale):
        subject = gettext("Your signature is not confirmed yet")
    return Draft(
        kind=REMINDER, to_name=name, to_address=crypt.decrypt(signature.email_encrypted),
        subject=subject, sender_name=petition.campaign.sender_name, locale=signature.locale,
        context={"name": name, "petition": petition,
                 "petition_title": title_in(session, petition, signature.locale),
                 "organization": petition.campaign.organization,
                 "confirm_url": absolute_url(f"/confirm/{confirmation_token(signature)}"),
                 "petition_url": absolute_url(f"/petitions/{petition.slug}"),
                 "manage_url": absolute_url(my_data_path(signature.email_index, signature.locale))})
