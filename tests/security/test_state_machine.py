"""R38: a Hypothesis stateful test of the signature's life: pending -> confirmed, held (by the
signing path's checks) -> released or invalidated, and finally anonymised. Invariants after
every step: the displayed count is the number of counted (confirmed) signatures; a held one is
never counted; no email is queued for, or would be built for, an invalidated signature; after
anonymisation no signer data is left and the count has not moved."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import delete, func, select

from campaign.extensions import db
from campaign.models import (
    AuditEvent,
    OutboundEmail,
    Petition,
    PetitionCounter,
    PetitionStatus,
    Signature,
    SignatureStatus,
    User,
)
from campaign.models.base import utcnow
from campaign.services import abuse, retention
from campaign.services.counting import signature_count
from campaign.services.emails import parse_email
from campaign.services.outbox import _builders
from campaign.services.privacy import cipher
from campaign.services.signing import SignerInput, SigningSignals, confirm_signature, sign_petition
from tests.security.conftest import SLUG

PEOPLE = 12


def test_signature_state_machine(make_sec_app):
    app = make_sec_app(SIGNING_IP_BURST="", SIGNING_DOMAIN_BURST="")

    class Signatures(RuleBasedStateMachine):
        @initialize()
        def start(self):
            self.context = app.app_context()
            self.context.push()
            for model in (OutboundEmail, AuditEvent, Signature, PetitionCounter):
                db.session.execute(delete(model))
            petition = db.session.scalar(select(Petition).where(Petition.slug == SLUG))
            petition.status = PetitionStatus.PUBLISHED
            petition.closed_at = None
            self.actor = db.session.scalar(select(User).where(User.email == "machine@example.org"))
            if self.actor is None:
                self.actor = User(email="machine@example.org", password_hash="x", is_admin=True,
                                  status="active", session_token="t")
                db.session.add(self.actor)
            db.session.commit()
            self.petition_id = petition.id
            self.invalidated_at: dict[int, object] = {}
            self.anonymised = False
            self.count_at_anonymisation: int | None = None

        def teardown(self):
            db.session.rollback()
            self.context.pop()

        def _petition(self):
            return db.session.get(Petition, self.petition_id)

        def _ip(self, person):
            return f"198.51.100.{person + 1}"

        def _signature(self, person):
            index = cipher().blind_index(parse_email(f"p{person}@example.org").canonical)
            return db.session.scalar(select(Signature).where(Signature.email_index == index))

        @precondition(lambda self: not self.anonymised)
        @rule(person=st.integers(0, PEOPLE - 1), bot=st.booleans())
        def sign(self, person, bot):
            sign_petition(db.session, self._petition(), SignerInput(
                name=f"Person {person}", email=parse_email(f"p{person}@example.org"), country="DE"),
                ip=self._ip(person), signals=SigningSignals(ip=self._ip(person), honeypot_filled=bot))
            db.session.commit()

        @precondition(lambda self: not self.anonymised)
        @rule(person=st.integers(0, PEOPLE - 1))
        def confirm(self, person):
            signature = self._signature(person)
            if signature is not None:
                confirm_signature(db.session, signature)
                db.session.commit()

        @precondition(lambda self: not self.anonymised)
        @rule(person=st.integers(0, PEOPLE - 1))
        def release(self, person):
            selection = abuse.Selection(ip=self._ip(person))
            preview = abuse.preview_release(db.session, self._petition(), selection)
            result = abuse.release_held(db.session, self.actor, self._petition(), selection)
            db.session.commit()
            assert preview == result.changed

        @precondition(lambda self: not self.anonymised)
        @rule(person=st.integers(0, PEOPLE - 1))
        def invalidate(self, person):
            selection = abuse.Selection(ip=self._ip(person))
            preview = abuse.preview_invalidation(db.session, self._petition(), selection)
            result = abuse.invalidate_matching(db.session, self.actor, self._petition(), selection, "machine")
            db.session.commit()
            assert preview == result.changed
            signature = self._signature(person)
            if result.changed and signature is not None:
                self.invalidated_at[signature.id] = utcnow()

        @precondition(lambda self: not self.anonymised)
        @rule()
        def close_and_anonymise(self):
            self.count_at_anonymisation = signature_count(db.session, self.petition_id)
            petition = self._petition()
            petition.status = PetitionStatus.CLOSED
            petition.closed_at = utcnow().replace(year=utcnow().year - 2)
            db.session.commit()
            retention.anonymize_closed_petitions(db.session)
            self.anonymised = True

        @precondition(lambda self: self.anonymised)
        @rule(person=st.integers(0, PEOPLE - 1))
        def sign_after_closing(self, person):
            import pytest

            with pytest.raises(ValueError, match="not open"):
                sign_petition(db.session, self._petition(), SignerInput(
                    name="Late", email=parse_email(f"p{person}@example.org"), country="DE"), ip=self._ip(person))
            db.session.rollback()

        @invariant()
        def displayed_count_is_the_counted_signatures(self):
            if not hasattr(self, "petition_id"):
                return
            counted = db.session.scalar(select(func.count()).select_from(Signature).where(
                Signature.petition_id == self.petition_id, Signature.status == SignatureStatus.CONFIRMED))
            assert signature_count(db.session, self.petition_id) == counted
            if self.count_at_anonymisation is not None:
                assert counted == self.count_at_anonymisation

        @invariant()
        def held_is_never_counted(self):
            if not hasattr(self, "petition_id"):
                return
            for signature in db.session.scalars(select(Signature).where(Signature.status == SignatureStatus.HELD)):
                assert signature.released_at is None or signature.confirmed_at is None
                assert signature.hold_reasons

        @invariant()
        def no_email_after_invalidation(self):
            if not hasattr(self, "petition_id"):
                return
            for signature_id, when in self.invalidated_at.items():
                rows = list(db.session.scalars(select(OutboundEmail).where(OutboundEmail.signature_id == signature_id)))
                assert all(row.created_at <= when for row in rows)
                for row in rows:
                    builder = _builders[row.kind]
                    assert builder(db.session, row) is None, row.kind
            db.session.rollback()

        @invariant()
        def anonymised_rows_hold_nothing(self):
            if not getattr(self, "anonymised", False):
                return
            for signature in db.session.scalars(select(Signature)):
                assert signature.ip_hash is None and signature.email_domain_hash is None
                assert cipher().decrypt(signature.email_encrypted) == ""
                assert cipher().decrypt(signature.name_encrypted) == ""

    Signatures.TestCase.settings = settings(
        max_examples=25, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    Signatures.TestCase().runTest()
