"""Email addresses: what is refused, and which spellings are one mailbox."""

from __future__ import annotations

import pytest

from campaign.services.emails import InvalidEmail, canonical_email, parse_email


@pytest.mark.parametrize(("typed", "canonical"), [
    ("  Ada@Example.COM ", "ada@example.com"),
    ("a.b+x@gmail.com", "ab@gmail.com"),
    ("ab@googlemail.com", "ab@gmail.com"),
    ("AB@gmail.com", "ab@gmail.com"),
    ("first.last@example.org", "first.last@example.org"),  # dots matter elsewhere
    ("me+news@example.org", "me+news@example.org"),        # so do +tags at unknown providers
    ("me+news@outlook.com", "me@outlook.com"),
    ("Ｆｕｌｌ@example.com", "full@example.com"),              # NFKC folds full-width letters
])
def test_canonical_forms(typed, canonical):
    assert parse_email(typed).canonical == canonical


@pytest.mark.parametrize("typed", ["", "   ", "not-an-email", "a@", "@example.com", "a b@example.com",
                                   "a@exa mple.com", "x" * 250 + "@example.com", "a@b@example.com"])
def test_invalid_addresses_are_refused_with_a_message(typed):
    with pytest.raises(InvalidEmail) as error:
        parse_email(typed)
    assert str(error.value)


def test_the_address_mail_goes_to_keeps_what_was_typed():
    parsed = parse_email("A.B+Petitions@Gmail.com")
    assert parsed.address == "A.B+Petitions@gmail.com"
    assert canonical_email(parsed.address) == "ab@gmail.com"


def test_international_addresses_are_accepted():
    parsed = parse_email("иван@пример.рф")
    assert parsed.canonical == "иван@пример.рф"
