"""What organizers do: who may touch which campaign, campaigns and their members, petitions
and their lifecycle (draft -> in review -> published -> closed), paper signatures, the list of
signatures with search, and invalidation.

Every function that takes an object id checks the actor first (campaign_for, petition_for,
...): an object of a campaign the actor is not in raises NotFound, exactly like a missing one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, func, select, update

from campaign.models import (
    Campaign,
    CampaignTarget,
    Invitation,
    InvitationStatus,
    MailingPolicy,
    MemberRole,
    Membership,
    OfflineSignatures,
    Petition,
    PetitionStatus,
    PetitionTarget,
    Signature,
    SignatureStatus,
    Target,
    User,
    UserStatus,
)
from campaign.models.base import utcnow
from campaign.models.petitions import PetitionStateError
from campaign.services.audit import record
from campaign.services.counting import add_to_count, signature_count
from campaign.services.emails import InvalidEmail, canonical_email, parse_email
from campaign.services.markdown import render_markdown
from campaign.services.outbox import queue_email
from campaign.services.petitions import create_counter_shards
from campaign.services.privacy import cipher
from campaign.services.types import DbSession

ORGANIZER_INVITATION = "organizer_invitation"
_INVITE_SALT = "campaign.organizer-invitation"
SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,118}[a-z0-9])$")


class NotFound(LookupError):
    """No such object, or not one the actor may see: the page answers 404 either way."""


class Forbidden(PermissionError):
    """The actor is in the campaign but lacks the role (owner, admin) for this action: 403."""


class OrganizingError(ValueError):
    """A request that cannot be done as asked; the message is fit to show next to the form."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SlugTaken(OrganizingError):
    def __init__(self, suggestion: str, field: str = "slug") -> None:
        super().__init__(f"That address is taken. “{suggestion}” is free.", field)
        self.suggestion = suggestion


# --- who may touch what ---------------------------------------------------------------------

def role_in(session: DbSession, user: User, campaign_id: int) -> str | None:
    """The user's role in the campaign: owner, organizer, or None."""
    return session.scalar(select(Membership.role).where(
        Membership.campaign_id == campaign_id, Membership.user_id == user.id))


def campaign_for(session: DbSession, actor: User, campaign_id: int, *, owner: bool = False) -> Campaign:
    """The campaign if the actor may work in it (owner=True: may manage it). Raises NotFound or
    Forbidden. Admins may do everything."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound
    if actor.is_admin:
        return campaign
    role = role_in(session, actor, campaign_id)
    if role is None:
        raise NotFound
    if owner and role != MemberRole.OWNER:
        raise Forbidden
    return campaign


def petition_for(session: DbSession, actor: User, petition_id: int, *, owner: bool = False) -> Petition:
    petition = session.get(Petition, petition_id)
    if petition is None:
        raise NotFound
    campaign_for(session, actor, petition.campaign_id, owner=owner)
    return petition


def signature_for(session: DbSession, actor: User, signature_id: int) -> tuple[Signature, Petition]:
    signature = session.get(Signature, signature_id)
    if signature is None:
        raise NotFound
    return signature, petition_for(session, actor, signature.petition_id)


def offline_entry_for(session: DbSession, actor: User, entry_id: int) -> tuple[OfflineSignatures, Petition]:
    entry = session.get(OfflineSignatures, entry_id)
    if entry is None:
        raise NotFound
    return entry, petition_for(session, actor, entry.petition_id)


def invitation_for(session: DbSession, actor: User, invitation_id: int) -> tuple[Invitation, Campaign]:
    invitation = session.get(Invitation, invitation_id)
    if invitation is None:
        raise NotFound
    return invitation, campaign_for(session, actor, invitation.campaign_id, owner=True)


def campaigns_of(session: DbSession, actor: User) -> list[tuple[Campaign, str]]:
    """The campaigns the actor works in, with the role; admins see every campaign."""
    if actor.is_admin:
        roles: dict[int, str] = dict(session.execute(
            select(Membership.campaign_id, Membership.role).where(Membership.user_id == actor.id)).all())
        campaigns = session.scalars(select(Campaign).order_by(Campaign.name))
        return [(c, roles.get(c.id, "admin")) for c in campaigns]
    rows = session.execute(
        select(Campaign, Membership.role).join(Membership, Membership.campaign_id == Campaign.id)
        .where(Membership.user_id == actor.id).order_by(Campaign.name))
    return [(c, role) for c, role in rows]


# --- slugs ----------------------------------------------------------------------------------

def slugify(text: str, fallback: str = "petition") -> str:
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80].strip("-")
    return slug if len(slug) >= 3 else fallback


def _free_slug(session: DbSession, model: type[Petition] | type[Campaign], base: str) -> str:
    base = base[:110].strip("-") or "petition"
    taken = set(session.scalars(select(model.slug).where(model.slug.like(f"{base}%"))))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def suggest_petition_slug(session: DbSession, base: str) -> str:
    return _free_slug(session, Petition, base)


def _check_slug(slug: str) -> None:
    if not SLUG_PATTERN.match(slug):
        raise OrganizingError("Use 3 to 120 lower-case letters, digits and hyphens, not starting or "
                              "ending with a hyphen.", "slug")


# --- campaigns ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CampaignInput:
    name: str
    slug: str
    organization: str
    sender_name: str
    description: str = ""


def create_campaign(session: DbSession, actor: User, data: CampaignInput) -> Campaign:
    """A new campaign with the actor as its owner. Raises SlugTaken / OrganizingError."""
    slug = data.slug or slugify(data.name, "campaign")
    _check_slug(slug)
    if session.scalar(select(Campaign.id).where(Campaign.slug == slug)):
        raise SlugTaken(_free_slug(session, Campaign, slug))
    campaign = Campaign(slug=slug, name=data.name, organization=data.organization,
                        sender_name=data.sender_name or data.organization, description=data.description)
    session.add(campaign)
    session.flush()
    session.add(Membership(campaign_id=campaign.id, user_id=actor.id, role=MemberRole.OWNER))
    record(session, actor, "campaign.created", campaign_id=campaign.id, object_type="campaign",
           object_id=campaign.id, summary=campaign.name)
    return campaign


def update_campaign(session: DbSession, actor: User, campaign: Campaign, data: CampaignInput) -> None:
    slug = data.slug or campaign.slug
    _check_slug(slug)
    if slug != campaign.slug and session.scalar(select(Campaign.id).where(Campaign.slug == slug)):
        raise SlugTaken(_free_slug(session, Campaign, slug))
    changed = [name for name, value in (("name", data.name), ("slug", slug),
                                        ("organization", data.organization),
                                        ("sender_name", data.sender_name or data.organization),
                                        ("description", data.description))
               if getattr(campaign, name) != value]
    for name in changed:
        setattr(campaign, name, {"slug": slug, "sender_name": data.sender_name or data.organization}.get(
            name, getattr(data, name)))
    if changed:
        record(session, actor, "campaign.edited", campaign_id=campaign.id, object_type="campaign",
               object_id=campaign.id, summary="changed " + ", ".join(changed))


def campaign_footprint(session: DbSession, campaign: Campaign) -> dict[str, int]:
    """What deleting the campaign would delete: for the confirmation screen."""
    petition_ids = select(Petition.id).where(Petition.campaign_id == campaign.id)
    return {
        "petitions": int(session.scalar(select(func.count()).select_from(Petition)
                                        .where(Petition.campaign_id == campaign.id)) or 0),
        "signatures": int(session.scalar(select(func.count()).select_from(Signature)
                                         .where(Signature.petition_id.in_(petition_ids))) or 0),
        "targets": int(session.scalar(select(func.count()).select_from(CampaignTarget)
                                      .where(CampaignTarget.campaign_id == campaign.id)) or 0),
    }


def delete_campaign(session: DbSession, actor: User, campaign: Campaign) -> None:
    """Delete the campaign with its petitions, signatures, own targets and memberships.
    Owners and admins only (the caller fetched it with owner=True)."""
    own_targets = select(CampaignTarget.target_id).where(CampaignTarget.campaign_id == campaign.id)
    # The campaign's own targets go too: left without their owner row they would look shared.
    session.execute(delete(Target).where(Target.id.in_(own_targets)).execution_options(
        synchronize_session=False))
    # Signatures, counters, petition targets, outbox rows and paper counts follow by ON DELETE.
    session.execute(delete(Petition).where(Petition.campaign_id == campaign.id).execution_options(
        synchronize_session=False))
    record(session, actor, "campaign.deleted", campaign_id=None, object_type="campaign",
           object_id=campaign.id, summary=f"{campaign.name} ({campaign.slug})")
    session.delete(campaign)
    session.flush()


# --- members and invitations ----------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    user: User
    role: str


def members_of(session: DbSession, campaign_id: int) -> list[Member]:
    rows = session.execute(select(User, Membership.role).join(Membership, Membership.user_id == User.id)
                           .where(Membership.campaign_id == campaign_id).order_by(User.email))
    return [Member(user, role) for user, role in rows]


def pending_invitations(session: DbSession, campaign_id: int) -> list[Invitation]:
    return list(session.scalars(select(Invitation).where(
        Invitation.campaign_id == campaign_id, Invitation.status == InvitationStatus.PENDING)
        .order_by(Invitation.created_at.desc())))


def invite_organizer(session: DbSession, actor: User, campaign: Campaign, email: str) -> Invitation:
    """Invite someone by email to organize the campaign (owners only; the caller checked).

    Queues the invitation email. Raises InvalidEmail, or OrganizingError when that address is
    already a member.
    """
    address = parse_email(email).address.lower()
    member = session.scalar(select(User.id).join(Membership, Membership.user_id == User.id).where(
        Membership.campaign_id == campaign.id, User.email == address))
    if member is not None:
        raise OrganizingError("That person already organizes this campaign.", "email")
    invitation = Invitation(campaign_id=campaign.id, email=address, role=MemberRole.ORGANIZER,
                            invited_by_id=actor.id, nonce=secrets.token_urlsafe(16))
    session.add(invitation)
    session.flush()
    queue_email(session, kind=ORGANIZER_INVITATION, key=f"{ORGANIZER_INVITATION}:{invitation.id}:1")
    record(session, actor, "member.invited", campaign_id=campaign.id, object_type="invitation",
           object_id=invitation.id, summary=address)
    return invitation


def revoke_invitation(session: DbSession, actor: User, invitation: Invitation) -> None:
    if invitation.status == InvitationStatus.PENDING:
        invitation.status = InvitationStatus.REVOKED
        record(session, actor, "member.invitation_revoked", campaign_id=invitation.campaign_id,
               object_type="invitation", object_id=invitation.id, summary=invitation.email)


def _invite_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_INVITE_SALT,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def invitation_token(invitation: Invitation) -> str:
    return _invite_serializer().dumps({"i": invitation.id, "n": invitation.nonce})


def invitation_for_token(session: DbSession, token: str) -> Invitation:
    """A pending invitation named by a link. Raises OrganizingError (expired, used, revoked)."""
    try:
        data: Any = _invite_serializer().loads(token, max_age=int(current_app.config["INVITATION_MAX_AGE"]))
    except SignatureExpired:
        raise OrganizingError("This invitation has expired. Ask the campaign's owner for a new one.") \
            from None
    except BadSignature:
        raise OrganizingError("This invitation link is not valid.") from None
    invitation = session.get(Invitation, data.get("i")) if isinstance(data, dict) else None
    if (invitation is None or not secrets.compare_digest(invitation.nonce, str(data.get("n")))
            or invitation.status != InvitationStatus.PENDING):
        raise OrganizingError("This invitation was used already or withdrawn.")
    return invitation


def accept_invitation(session: DbSession, user: User, invitation: Invitation) -> Campaign:
    """Join the campaign. The signed-in account must have the invited address: a forwarded
    link does not let someone else in. The link proves the address, so the account is active."""
    if user.email.lower() != invitation.email.lower():
        raise OrganizingError(f"This invitation is for {invitation.email}. Sign out and sign in "
                              "(or sign up) with that address.")
    campaign = session.get(Campaign, invitation.campaign_id)
    if campaign is None:
        raise OrganizingError("This campaign no longer exists.")
    if role_in(session, user, campaign.id) is None:
        session.add(Membership(campaign_id=campaign.id, user_id=user.id, role=invitation.role))
    invitation.status = InvitationStatus.ACCEPTED
    invitation.accepted_at = utcnow()
    if user.status in (UserStatus.UNVERIFIED, UserStatus.PENDING):
        # An owner vouched for this address and the link proves it; the account can only reach
        # the campaigns it is invited to.
        user.status = UserStatus.ACTIVE
        user.approved_at = utcnow()
    record(session, user, "member.joined", campaign_id=campaign.id, object_type="user",
           object_id=user.id, summary=user.email)
    return campaign


def remove_member(session: DbSession, actor: User, campaign: Campaign, user_id: int) -> None:
    """Remove a co-organizer (owners and admins; the caller checked). The last owner stays."""
    membership = session.get(Membership, (campaign.id, user_id))
    if membership is None:
        raise NotFound
    if membership.role == MemberRole.OWNER:
        owners = session.scalar(select(func.count()).select_from(Membership).where(
            Membership.campaign_id == campaign.id, Membership.role == MemberRole.OWNER)) or 0
        if owners <= 1:
            raise OrganizingError("A campaign keeps at least one owner.")
    user = session.get(User, user_id)
    session.delete(membership)
    record(session, actor, "member.removed", campaign_id=campaign.id, object_type="user",
           object_id=user_id, summary=user.email if user else "")


# --- petitions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PetitionInput:
    title: str
    slug: str
    summary: str = ""
    body_markdown: str = ""
    letter: str = ""
    goal: int = 1000
    language: str = "en"
    closes_at: datetime | None = None
    mailing_policy: str = MailingPolicy.NONE
    is_sensitive: bool = True


_EDITABLE = ("title", "slug", "summary", "body_markdown", "letter", "goal", "language", "closes_at",
             "mailing_policy", "is_sensitive")


def create_petition(session: DbSession, actor: User, campaign: Campaign, data: PetitionInput) -> Petition:
    """A draft petition in the campaign. Raises SlugTaken (with a free suggestion) or
    OrganizingError. Its counter shards are created with it."""
    slug = data.slug or slugify(data.title)
    _check_slug(slug)
    if session.scalar(select(Petition.id).where(Petition.slug == slug)):
        raise SlugTaken(suggest_petition_slug(session, slug))
    _check_values(data)
    petition = Petition(campaign_id=campaign.id, status=PetitionStatus.DRAFT)
    for name in _EDITABLE:
        setattr(petition, name, getattr(data, name))
    petition.slug = slug
    petition.body_html = render_markdown(data.body_markdown)
    session.add(petition)
    create_counter_shards(session, petition)
    record(session, actor, "petition.created", campaign_id=campaign.id, object_type="petition",
           object_id=petition.id, summary=petition.title)
    return petition


def _check_values(data: PetitionInput) -> None:
    if data.mailing_policy not in set(MailingPolicy):
        raise OrganizingError("Choose a mailing policy from the list.", "mailing_policy")
    if data.closes_at is not None and data.closes_at <= utcnow():
        raise OrganizingError("The closing date must be in the future.", "closes_at")


def update_petition(session: DbSession, actor: User, petition: Petition, data: PetitionInput) -> list[str]:
    """Save the organizer's edits; returns the names of the fields that changed.

    A published or closed petition keeps its address (links to it are out there).
    """
    slug = data.slug or petition.slug
    if slug != petition.slug:
        if petition.status in (PetitionStatus.PUBLISHED, PetitionStatus.CLOSED):
            raise OrganizingError("The address of a published petition cannot change.", "slug")
        _check_slug(slug)
        if session.scalar(select(Petition.id).where(Petition.slug == slug)):
            raise SlugTaken(suggest_petition_slug(session, slug))
    if data.closes_at != petition.closes_at:
        _check_values(data)
    elif data.mailing_policy not in set(MailingPolicy):
        raise OrganizingError("Choose a mailing policy from the list.", "mailing_policy")
    changed = []
    for name in _EDITABLE:
        value = slug if name == "slug" else getattr(data, name)
        if getattr(petition, name) != value:
            setattr(petition, name, value)
            changed.append(name)
    if "body_markdown" in changed:
        petition.body_html = render_markdown(petition.body_markdown)
    if changed:
        petition.updated_at = utcnow()
        record(session, actor, "petition.edited", campaign_id=petition.campaign_id,
               object_type="petition", object_id=petition.id,
               summary=f"{petition.title}: changed " + ", ".join(changed))
    return changed


def publish_problems(session: DbSession, petition: Petition) -> list[str]:
    """What stops the petition from being published, in words; empty when it is ready."""
    problems = []
    if not petition.title.strip():
        problems.append("Give the petition a title.")
    if not petition.body_markdown.strip():
        problems.append("Write the petition's text.")
    if petition.past_closing_date:
        problems.append("The closing date has passed. Choose a later one.")
    if petition.mailing_policy != MailingPolicy.NONE:
        has_targets = session.scalar(select(func.count()).select_from(PetitionTarget).where(
            PetitionTarget.petition_id == petition.id)) or 0
        if not has_targets:
            problems.append("Choose the targets who receive the letters, or set the mailing policy to none.")
        if not petition.letter.strip():
            problems.append("Write the letter to the targets, or set the mailing policy to none.")
    return problems


def publish_petition(session: DbSession, actor: User, petition: Petition) -> str:
    """Publish, or send to the admins' review queue when REVIEW_REQUIRED (admins publish
    directly). Returns the new status. Raises OrganizingError listing what is missing."""
    problems = publish_problems(session, petition)
    if problems:
        raise OrganizingError(" ".join(problems))
    try:
        if current_app.config["REVIEW_REQUIRED"] and not actor.is_admin:
            petition.submit_for_review()
            petition.review_note = None
            action = "petition.submitted"
        else:
            petition.publish()
            action = "petition.published"
    except PetitionStateError:
        state = petition.status.replace("_", " ")
        raise OrganizingError(f"A {state} petition cannot be published.") from None
    record(session, actor, action, campaign_id=petition.campaign_id, object_type="petition",
           object_id=petition.id, summary=petition.title)
    return petition.status


def withdraw_from_review(session: DbSession, actor: User, petition: Petition) -> None:
    try:
        petition.return_to_draft()
    except PetitionStateError:
        raise OrganizingError("Only a petition in review can be withdrawn.") from None
    record(session, actor, "petition.withdrawn", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=petition.title)


def review_queue(session: DbSession) -> list[Petition]:
    return list(session.scalars(select(Petition).where(Petition.status == PetitionStatus.IN_REVIEW)
                                .order_by(Petition.submitted_at)))


def approve_petition(session: DbSession, admin: User, petition: Petition) -> None:
    """An admin publishes a petition from the review queue."""
    if not admin.is_admin:
        raise Forbidden
    if petition.status != PetitionStatus.IN_REVIEW:
        raise OrganizingError("This petition is not waiting for review.")
    problems = publish_problems(session, petition)
    if problems:
        raise OrganizingError(" ".join(problems))
    petition.publish()
    petition.review_note = None
    record(session, admin, "petition.approved", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=petition.title)


def reject_petition(session: DbSession, admin: User, petition: Petition, note: str) -> None:
    """An admin sends a petition back to draft with a note its organizers see."""
    if not admin.is_admin:
        raise Forbidden
    if petition.status != PetitionStatus.IN_REVIEW:
        raise OrganizingError("This petition is not waiting for review.")
    if not note.strip():
        raise OrganizingError("Tell the organizers what to change.", "note")
    petition.return_to_draft()
    petition.review_note = note.strip()[:2000]
    record(session, admin, "petition.returned", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=f"{petition.title}: {petition.review_note}")


def close_petition(session: DbSession, actor: User, petition: Petition) -> None:
    try:
        petition.close()
    except PetitionStateError:
        raise OrganizingError("Only a published petition can be closed.") from None
    count = signature_count(session, petition.id)
    record(session, actor, "petition.closed", campaign_id=petition.campaign_id, object_type="petition",
           object_id=petition.id, summary=f"{petition.title}: {count} signatures")


def close_due_petitions(session: DbSession) -> int:
    """Close every published petition whose closing date has passed. Returns how many."""
    due = list(session.scalars(select(Petition).where(
        Petition.status == PetitionStatus.PUBLISHED, Petition.closes_at <= utcnow())))
    for petition in due:
        petition.close()
        record(session, None, "petition.closed", campaign_id=petition.campaign_id, object_type="petition",
               object_id=petition.id, summary=f"{petition.title}: closing date reached")
    return len(due)


def delete_petition(session: DbSession, actor: User, petition: Petition) -> None:
    """Delete a petition with its signatures. Drafts: any organizer; once published (it has
    or had supporters), owners and admins only."""
    if petition.status != PetitionStatus.DRAFT and not actor.is_admin \
            and role_in(session, actor, petition.campaign_id) != MemberRole.OWNER:
        raise Forbidden
    signatures = session.scalar(select(func.count()).select_from(Signature)
                                .where(Signature.petition_id == petition.id)) or 0
    record(session, actor, "petition.deleted", campaign_id=petition.campaign_id, object_type="petition",
           object_id=petition.id, summary=f"{petition.title} ({petition.slug}), {signatures} signatures")
    session.execute(delete(Petition).where(Petition.id == petition.id).execution_options(
        synchronize_session=False))
    session.expunge(petition)


def duplicate_petition(session: DbSession, actor: User, petition: Petition, destination: Campaign,
                       slug: str = "") -> Petition:
    """Copy a petition into another campaign as a new draft with no signatures: for reuse,
    never for a translation (a copy has its own count). Targets come along; the source
    campaign's own targets are copied into the destination as its own."""
    if destination.id == petition.campaign_id:
        raise OrganizingError("Copy the petition into another campaign. To translate it, add a "
                              "translation instead, so its count is not split.", "campaign")
    slug = slug or suggest_petition_slug(session, f"{petition.slug}-copy"[:110])
    data = PetitionInput(**{name: getattr(petition, name) for name in _EDITABLE if name != "slug"},
                         slug=slug)
    if data.closes_at is not None and data.closes_at <= utcnow():
        data = PetitionInput(**{**data.__dict__, "closes_at": None})
    copy = create_petition(session, actor, destination, data)
    owned = set(session.scalars(select(CampaignTarget.target_id).where(
        CampaignTarget.campaign_id == petition.campaign_id)))
    links = session.scalars(select(PetitionTarget).where(PetitionTarget.petition_id == petition.id))
    for link in list(links):
        target_id = link.target_id
        if target_id in owned:
            original = session.get(Target, target_id)
            if original is None:
                continue
            clone = Target(name=original.name, title=original.title, country=original.country,
                           email=original.email, group_name=original.group_name)
            session.add(clone)
            session.flush()
            session.add(CampaignTarget(target_id=clone.id, campaign_id=destination.id))
            target_id = clone.id
        session.add(PetitionTarget(petition_id=copy.id, target_id=target_id, is_default=link.is_default,
                                   position=link.position))
    record(session, actor, "petition.duplicated", campaign_id=destination.id, object_type="petition",
           object_id=copy.id, summary=f"copy of petition {petition.id} ({petition.title})")
    return copy


# --- templates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PetitionTemplate:
    key: str
    name: str
    description: str
    fields: dict[str, Any] = field(default_factory=dict)


TEMPLATES: tuple[PetitionTemplate, ...] = (
    PetitionTemplate(
        "leaders", "A call on heads of government",
        "Each signer's letter goes to their own country's leader (like the G20 demo).",
        {"title": "Leaders: act now on …", "summary": "One sentence: what is happening, and what you ask.",
         "body_markdown": "**What is happening.** Describe it plainly, with sources.\n\n"
                          "**What we ask.** One clear demand of the leaders.\n\n"
                          "**Why it matters now.** A date, a summit, a vote.",
         "letter": "Dear {title},\n\nI am writing to ask you to …\n\nSincerely,\n",
         "mailing_policy": MailingPolicy.LETTERS, "goal": 10_000}),
    PetitionTemplate(
        "delivery", "A petition delivered in batches",
        "Signatures are delivered to the targets as a list with the count.",
        {"title": "Stop …", "summary": "What you ask, of whom.",
         "body_markdown": "Explain the problem, the demand, and who can decide.",
         "letter": "We, the undersigned, call on you to …\n",
         "mailing_policy": MailingPolicy.DELIVERIES, "goal": 5_000}),
    PetitionTemplate(
        "blank", "A blank petition", "Start from nothing.",
        {"title": "", "mailing_policy": MailingPolicy.NONE, "goal": 1000}),
)


def petition_template(key: str) -> PetitionTemplate | None:
    return next((t for t in TEMPLATES if t.key == key), None)


# --- paper signatures ------------------------------------------------------------------------

def add_offline_signatures(session: DbSession, actor: User, petition: Petition, count: int,
                           note: str) -> OfflineSignatures:
    """Record paper signatures: they join the one count (the counter) and are listed apart."""
    if not 1 <= count <= 10_000_000:
        raise OrganizingError("Enter a number from 1 to 10,000,000.", "count")
    entry = OfflineSignatures(petition_id=petition.id, count=count, note=note.strip()[:1000],
                              created_by_id=actor.id)
    session.add(entry)
    session.flush()
    add_to_count(session, petition.id, count)
    record(session, actor, "offline.added", campaign_id=petition.campaign_id, object_type="offline",
           object_id=entry.id, summary=f"{count} paper signatures on {petition.title}: {entry.note}")
    return entry


def remove_offline_signatures(session: DbSession, actor: User, entry: OfflineSignatures,
                              petition: Petition) -> bool:
    """Take a paper entry back out of the count. Conditional: a double click subtracts once."""
    result = session.execute(delete(OfflineSignatures).where(OfflineSignatures.id == entry.id)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_to_count(session, petition.id, -entry.count)
    record(session, actor, "offline.removed", campaign_id=petition.campaign_id, object_type="offline",
           object_id=entry.id, summary=f"{entry.count} paper signatures on {petition.title}")
    session.expunge(entry)
    return True


def offline_entries(session: DbSession, petition_id: int) -> list[OfflineSignatures]:
    return list(session.scalars(select(OfflineSignatures).where(OfflineSignatures.petition_id == petition_id)
                                .order_by(OfflineSignatures.created_at.desc())))


# --- the organizer's view of signatures -----------------------------------------------------

@dataclass(frozen=True)
class PetitionStats:
    total: int          # signature_count: what the public page shows
    confirmed: int      # confirmed online signatures
    pending: int
    held: int
    invalidated: int
    offline: int
    today: int          # signatures created in the last 24 hours, any status


def petition_stats(session: DbSession, petition_id: int) -> PetitionStats:
    by_status: dict[str, int] = dict(session.execute(
        select(Signature.status, func.count()).where(Signature.petition_id == petition_id)
        .group_by(Signature.status)).all())
    offline = session.scalar(select(func.coalesce(func.sum(OfflineSignatures.count), 0))
                             .where(OfflineSignatures.petition_id == petition_id)) or 0
    today = session.scalar(select(func.count()).select_from(Signature).where(
        Signature.petition_id == petition_id, Signature.created_at >= utcnow() - timedelta(days=1))) or 0
    return PetitionStats(
        total=signature_count(session, petition_id),
        confirmed=int(by_status.get(SignatureStatus.CONFIRMED, 0)),
        pending=int(by_status.get(SignatureStatus.PENDING, 0)),
        held=int(by_status.get(SignatureStatus.HELD, 0)),
        invalidated=int(by_status.get(SignatureStatus.INVALIDATED, 0)),
        offline=int(offline), today=int(today))


@dataclass(frozen=True)
class SignatureRow:
    id: int
    name: str
    email: str          # shown only for signers who agreed to hear from the organizers
    country: str
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    consent_updates: bool
    comment: str
    source: str
    invalidation_reason: str | None


@dataclass(frozen=True)
class SignatureSearch:
    status: str = ""
    email: str = ""
    name: str = ""
    country: str = ""
    page: int = 1
    per_page: int = 50


@dataclass
class SignaturePage:
    rows: list[SignatureRow]
    total: int
    page: int
    pages: int
    message: str = ""   # e.g. "narrow the filter"


def _mask(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}•••@{domain}" if domain else "•••"


def _plain(encrypted: bytes | None) -> str:
    # An anonymized signature (the retention job) keeps no readable name or address.
    try:
        return cipher().decrypt(encrypted) if encrypted else ""
    except ValueError:
        return ""


def _row(signature: Signature, name: str | None = None) -> SignatureRow:
    address = _plain(signature.email_encrypted)
    return SignatureRow(
        id=signature.id, name=name if name is not None else (_plain(signature.name_encrypted) or "(erased)"),
        email=address if signature.consent_updates or not address else _mask(address),
        country=signature.country,
        status=signature.status, created_at=signature.created_at, confirmed_at=signature.confirmed_at,
        consent_updates=signature.consent_updates, comment=signature.comment, source=signature.source,
        invalidation_reason=signature.invalidation_reason)


def search_signatures(session: DbSession, petition: Petition, search: SignatureSearch) -> SignaturePage:
    """Newest signatures first, filtered by status and country; by exact email through the blind
    index; by name by decrypting within the filtered set, which may hold at most
    SIGNATURE_SEARCH_LIMIT rows (beyond it the page asks to narrow the filter)."""
    per_page = max(1, min(search.per_page, 200))
    page = max(1, search.page)
    conditions: list[Any] = [Signature.petition_id == petition.id]
    if search.status in set(SignatureStatus):
        conditions.append(Signature.status == search.status)
    if search.country:
        conditions.append(Signature.country == search.country.upper()[:8])
    if search.email:
        try:
            address = parse_email(search.email)
        except InvalidEmail:
            return SignaturePage([], 0, 1, 1, "Enter a whole email address: the search matches exact "
                                              "addresses only.")
        conditions.append(Signature.email_index == cipher().blind_index(canonical_email(address.address)))
    newest = (Signature.created_at.desc(), Signature.id.desc())
    if not search.name:
        total = int(session.scalar(select(func.count()).select_from(Signature).where(*conditions)) or 0)
        rows = session.scalars(select(Signature).where(*conditions).order_by(*newest)
                               .limit(per_page).offset((page - 1) * per_page))
        return SignaturePage([_row(s) for s in rows], total, page, max(1, -(-total // per_page)))

    limit = int(current_app.config["SIGNATURE_SEARCH_LIMIT"])
    candidates = int(session.scalar(select(func.count()).select_from(Signature).where(*conditions)) or 0)
    if candidates > limit:
        return SignaturePage([], 0, 1, 1, f"A name search looks through at most {limit:,} signatures and "
                                          f"this filter matches {candidates:,}. Narrow it by status or "
                                          "country, or search by exact email address.")
    needle = unicodedata.normalize("NFKC", search.name).casefold().strip()
    matches: list[int] = []
    for signature_id, encrypted in session.execute(
            select(Signature.id, Signature.name_encrypted).where(*conditions).order_by(*newest)):
        if needle in unicodedata.normalize("NFKC", _plain(encrypted)).casefold():
            matches.append(signature_id)
    chosen = matches[(page - 1) * per_page: page * per_page]
    found = ({s.id: s for s in session.scalars(select(Signature).where(Signature.id.in_(chosen)))}
             if chosen else {})
    return SignaturePage([_row(found[i]) for i in chosen if i in found], len(matches), page,
                         max(1, -(-len(matches) // per_page)))


def signature_row(signature: Signature) -> SignatureRow:
    return _row(signature)


def invalidate_signature(session: DbSession, actor: User, signature: Signature, reason: str) -> bool:
    """Invalidate a signature with a reason: it stops counting and is never mailed (the outbox
    builders cancel mail for a signature that is not pending or confirmed).

    Conditional updates: of two concurrent calls one wins, and the count drops only if the
    signature was confirmed. Returns False if it was invalidated already.
    """
    reason = reason.strip()
    if not reason:
        raise OrganizingError("Say why this signature is invalid.", "reason")
    values = {"status": SignatureStatus.INVALIDATED, "invalidated_at": utcnow(),
              "invalidation_reason": reason[:1000]}
    was_confirmed = session.execute(
        update(Signature).where(Signature.id == signature.id, Signature.status == SignatureStatus.CONFIRMED)
        .values(**values).execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    if was_confirmed:
        add_to_count(session, signature.petition_id, -1)
    else:
        changed = session.execute(
            update(Signature).where(Signature.id == signature.id,
                                    Signature.status.in_([SignatureStatus.PENDING, SignatureStatus.HELD]))
            .values(**values).execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        if changed != 1:
            return False
    petition = session.get(Petition, signature.petition_id)
    # The signature's id and the reason only: the log never names a signer.
    record(session, actor, "signature.invalidated", campaign_id=petition.campaign_id if petition else None,
           object_type="signature", object_id=signature.id,
           summary=f"{'confirmed' if was_confirmed else 'unconfirmed'} signature on "
                   f"{petition.title if petition else '?'}: {reason[:500]}")
    session.refresh(signature)
    return True


def campaign_audit_visible(session: DbSession, actor: User, campaign_id: int) -> bool:
    """The audit log is for the campaign's owners and admins."""
    return actor.is_admin or role_in(session, actor, campaign_id) == MemberRole.OWNER

