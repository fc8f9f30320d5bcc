"""Targets for organizers: shared lists (targets no campaign owns, such as the demo's G20),
a campaign's own targets added by hand or from a CSV file, and which targets a petition addresses.

A campaign's own targets are seen and used only by its organizers (CampaignTarget); shared
lists can be used by everyone and changed only by admins.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, exists, func, or_, select

from campaign.models import CampaignTarget, Petition, PetitionTarget, Target, User
from campaign.services.audit import record
from campaign.services.countries import BODIES, is_country
from campaign.services.emails import InvalidEmail, parse_email
from campaign.services.organizing import NotFound, OrganizingError, campaign_for
from campaign.services.types import DbSession

CSV_COLUMNS = ("name", "title", "country", "email", "group")
CSV_MAX_ROWS = 5000
_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


@dataclass(frozen=True)
class TargetInput:
    name: str
    title: str
    country: str
    email: str
    group: str = ""


class TargetInvalid(OrganizingError):
    """Field errors of one target: {field: message}."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class CsvImportError(OrganizingError):
    """The file is refused as a whole; `errors` lists every problem, row by row."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"Nothing was imported: {len(errors)} problem{'s' if len(errors) != 1 else ''}.")
        self.errors = errors


def _is_shared() -> ColumnElement[bool]:
    return ~exists().where(CampaignTarget.target_id == Target.id)


def _usable_by(campaign_id: int) -> ColumnElement[bool]:
    owned = select(CampaignTarget.target_id).where(CampaignTarget.campaign_id == campaign_id)
    return or_(Target.id.in_(owned), _is_shared())


def target_problems(data: TargetInput) -> tuple[dict[str, str], TargetInput]:
    """Validate one target; returns the errors and the cleaned values."""
    errors: dict[str, str] = {}
    cleaned = {}
    for name, limit in (("name", 200), ("title", 300), ("group", 80)):
        value = (getattr(data, name) or "").strip()
        if any(ch in _CONTROL for ch in value):
            errors[name] = "remove the control characters"
        elif len(value) > limit:
            errors[name] = f"use at most {limit} characters"
        elif not value and name != "group":
            errors[name] = "required"
        cleaned[name] = value
    country = (data.country or "").strip().upper()
    if not (is_country(country) or country in BODIES):
        errors["country"] = (f"unknown country code “{country}”: use ISO 3166 alpha-2 (e.g. DE), "
                             "EU or AFU" if country else "required")
    cleaned["country"] = country
    try:
        cleaned["email"] = parse_email(data.email or "").address
    except InvalidEmail as error:
        errors["email"] = str(error)
        cleaned["email"] = (data.email or "").strip()
    return errors, TargetInput(**cleaned)


def campaign_targets(session: DbSession, campaign_id: int) -> list[Target]:
    return list(session.scalars(
        select(Target).join(CampaignTarget, CampaignTarget.target_id == Target.id)
        .where(CampaignTarget.campaign_id == campaign_id).order_by(Target.group_name, Target.name)))


def target_groups(session: DbSession, campaign_id: int) -> list[tuple[str, int, bool]]:
    """(group, targets, shared) for every group this campaign may pick from."""
    shared = session.execute(select(Target.group_name, func.count()).where(_is_shared())
                             .group_by(Target.group_name).order_by(Target.group_name))
    own = session.execute(
        select(Target.group_name, func.count()).join(CampaignTarget, CampaignTarget.target_id == Target.id)
        .where(CampaignTarget.campaign_id == campaign_id).group_by(Target.group_name)
        .order_by(Target.group_name))
    return [(g, n, True) for g, n in shared if g] + [(g, n, False) for g, n in own if g]


def usable_targets(session: DbSession, campaign_id: int) -> list[Target]:
    return list(session.scalars(select(Target).where(_usable_by(campaign_id))
                                .order_by(Target.group_name, Target.country, Target.name)))


def shared_targets(session: DbSession) -> list[Target]:
    return list(session.scalars(select(Target).where(_is_shared())
                                .order_by(Target.group_name, Target.country, Target.name)))


def target_for(session: DbSession, actor: User, target_id: int) -> tuple[Target, int | None]:
    """A target the actor may change: its campaign's own, or (admins) a shared one.
    Returns the target and its campaign id (None for shared). Raises NotFound."""
    target = session.get(Target, target_id)
    if target is None:
        raise NotFound
    campaign_id = session.scalar(select(CampaignTarget.campaign_id).where(
        CampaignTarget.target_id == target_id))
    if campaign_id is None:
        if not actor.is_admin:
            raise NotFound
        return target, None
    campaign_for(session, actor, campaign_id)
    return target, campaign_id


def create_target(session: DbSession, actor: User, campaign_id: int | None, data: TargetInput) -> Target:
    """Add a target to the campaign's own (campaign_id None: to the shared lists, admins only).
    Raises TargetInvalid."""
    errors, cleaned = target_problems(data)
    if errors:
        raise TargetInvalid(errors)
    target = _add(session, campaign_id, cleaned)
    record(session, actor, "target.created", campaign_id=campaign_id, object_type="target",
           object_id=target.id, summary=f"{target.name} ({target.country})")
    return target


def _add(session: DbSession, campaign_id: int | None, data: TargetInput) -> Target:
    target = Target(name=data.name, title=data.title, country=data.country, email=data.email,
                    group_name=data.group)
    session.add(target)
    session.flush()
    if campaign_id is not None:
        session.add(CampaignTarget(target_id=target.id, campaign_id=campaign_id))
    return target


def update_target(session: DbSession, actor: User, target: Target, campaign_id: int | None,
                  data: TargetInput) -> None:
    errors, cleaned = target_problems(data)
    if errors:
        raise TargetInvalid(errors)
    target.name, target.title, target.country = cleaned.name, cleaned.title, cleaned.country
    target.email, target.group_name = cleaned.email, cleaned.group
    record(session, actor, "target.edited", campaign_id=campaign_id, object_type="target",
           object_id=target.id, summary=f"{target.name} ({target.country})")


def delete_target(session: DbSession, actor: User, target: Target, campaign_id: int | None) -> None:
    """Delete a target; the petitions that addressed it no longer do."""
    record(session, actor, "target.deleted", campaign_id=campaign_id, object_type="target",
           object_id=target.id, summary=f"{target.name} ({target.country})")
    session.execute(delete(Target).where(Target.id == target.id).execution_options(synchronize_session=False))
    session.expunge(target)


def parse_targets_csv(data: bytes) -> list[TargetInput]:
    """Read a CSV of targets, all or nothing: UTF-8 (a BOM is fine), a header with at least
    name, title, country, email, group. Raises CsvImportError listing every problem."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CsvImportError([f"The file is not UTF-8 text (byte {error.start + 1} is not valid). "
                              "Save it as “CSV UTF-8” and try again."]) from None
    if "\x00" in text:
        raise CsvImportError(["The file is not a text CSV file."])
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvImportError(["The file is empty."]) from None
    except csv.Error as error:
        raise CsvImportError([f"Line 1: {error}"]) from None
    columns = [h.strip().lower() for h in header]
    missing = [c for c in CSV_COLUMNS if c not in columns]
    if missing:
        raise CsvImportError([f"The first line must name the columns {', '.join(CSV_COLUMNS)}; "
                              f"missing: {', '.join(missing)}."])
    where = {c: columns.index(c) for c in CSV_COLUMNS}
    rows: list[TargetInput] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(rows) + len(errors) >= CSV_MAX_ROWS:
                errors.append(f"The file has more than {CSV_MAX_ROWS:,} targets; split it.")
                break
            if len(values) < len(columns):
                errors.append(f"Line {line}: {len(values)} values, the header has {len(columns)}.")
                continue
            row = TargetInput(**{("group" if c == "group" else c): values[i] for c, i in where.items()})
            problems, cleaned = target_problems(row)
            key = cleaned.email.lower() + "|" + cleaned.country
            if not problems and key in seen:
                problems["email"] = f"the same target as on line {seen[key]}"
            seen.setdefault(key, line)
            if problems:
                errors.append(f"Line {line}: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
            else:
                rows.append(cleaned)
    except csv.Error as error:
        errors.append(f"Line {reader.line_num}: {error}")
    if errors:
        raise CsvImportError(errors)
    if not rows:
        raise CsvImportError(["The file has a header but no targets."])
    return rows


def import_targets_csv(session: DbSession, actor: User, campaign_id: int | None, data: bytes,
                       petition: Petition | None = None) -> list[Target]:
    """Import a CSV file into the campaign's own targets (None: the shared lists), and onto a
    petition if given. Nothing is written unless every row is good. Raises CsvImportError."""
    rows = parse_targets_csv(data)
    targets = [_add(session, campaign_id, row) for row in rows]
    if petition is not None:
        _attach(session, petition, [t.id for t in targets])
    record(session, actor, "targets.imported", campaign_id=campaign_id,
           object_type="petition" if petition else "", object_id=petition.id if petition else None,
           summary=f"{len(targets)} targets from a CSV file")
    return targets


# --- a petition's targets -------------------------------------------------------------------

def _attach(session: DbSession, petition: Petition, target_ids: list[int]) -> int:
    present = set(session.scalars(select(PetitionTarget.target_id).where(
        PetitionTarget.petition_id == petition.id)))
    position = session.scalar(select(func.coalesce(func.max(PetitionTarget.position), -1)).where(
        PetitionTarget.petition_id == petition.id)) or 0
    added = 0
    for target_id in target_ids:
        if target_id in present:
            continue
        position += 1
        session.add(PetitionTarget(petition_id=petition.id, target_id=target_id, position=position))
        present.add(target_id)
        added += 1
    session.flush()
    return added


def add_group_to_petition(session: DbSession, actor: User, petition: Petition, group: str) -> int:
    """Address every target of a group the campaign may use. Returns how many were added."""
    ids = list(session.scalars(select(Target.id).where(Target.group_name == group,
                                                      _usable_by(petition.campaign_id))
                               .order_by(Target.id)))
    if not ids:
        raise NotFound
    added = _attach(session, petition, ids)
    record(session, actor, "petition.targets_added", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=f"{added} targets of {group}")
    return added


def add_target_to_petition(session: DbSession, actor: User, petition: Petition, target_id: int) -> None:
    """Address one target; it must be shared or the campaign's own, else NotFound."""
    usable = session.scalar(select(Target.id).where(Target.id == target_id, _usable_by(petition.campaign_id)))
    if usable is None:
        raise NotFound
    _attach(session, petition, [target_id])
    record(session, actor, "petition.targets_added", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=f"target {target_id}")


def remove_target_from_petition(session: DbSession, actor: User, petition: Petition, target_id: int) -> None:
    link = session.get(PetitionTarget, (petition.id, target_id))
    if link is None:
        raise NotFound
    session.delete(link)
    record(session, actor, "petition.target_removed", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=f"target {target_id}")


def set_default_target(session: DbSession, actor: User, petition: Petition, target_id: int,
                       default: bool) -> None:
    """Mark a target as one who receives the letters of signers whose country no target covers."""
    link = session.get(PetitionTarget, (petition.id, target_id))
    if link is None:
        raise NotFound
    link.is_default = default
    record(session, actor, "petition.target_default" if default else "petition.target_not_default",
           campaign_id=petition.campaign_id, object_type="petition", object_id=petition.id,
           summary=f"target {target_id}")


def petition_target_links(session: DbSession, petition_id: int) -> list[tuple[Target, PetitionTarget]]:
    return [(t, link) for t, link in session.execute(
        select(Target, PetitionTarget).join(PetitionTarget, PetitionTarget.target_id == Target.id)
        .where(PetitionTarget.petition_id == petition_id)
        .order_by(PetitionTarget.position, Target.name))]
