"""Opaque cursors for cursor pagination: the position after the last item of a page.

A cursor is URL-safe base64 of a small JSON object. It is not signed: it only says where to
continue in a list the client may read anyway, and a forged one is just another position.
Anything that does not decode to the expected shape is an InvalidCursor (a 400 for the client).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

_MAX_LENGTH = 200


class InvalidCursor(ValueError):
    """The cursor was not made by this API (or is from another list)."""


def encode_cursor(kind: str, position: int) -> str:
    raw = json.dumps({"k": kind, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, cursor: str) -> int:
    """The position a cursor of this kind of list holds. Raises InvalidCursor."""
    if not cursor or len(cursor) > _MAX_LENGTH or not cursor.isascii():
        raise InvalidCursor(cursor)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data: Any = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor(cursor) from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise InvalidCursor(cursor)
    position = data.get("p")
    # bool is an int in Python; a cursor never holds one.
    if not isinstance(position, int) or isinstance(position, bool) or not 0 < position < 2**63:
        raise InvalidCursor(cursor)
    return position
