"""The shapes of ids the app accepts, checked in one place.

Conversation and turn ids are UUID4 strings made by the app; a user id is either
one the app made (`u_` + hex) or one a seed client named, so its shape is looser.
An id of the wrong shape never reaches Redis: it is a 400, not a lookup.
"""

from __future__ import annotations

import re

from webapp.base.errors import InvalidId, InvalidUserId

UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ID_PATTERN = re.compile(UUID_PATTERN)
ID_QUERY = f"^{UUID_PATTERN}$"  # for Query(pattern=...): pydantic searches a pattern, so it is anchored
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_id(value: str) -> str:
    """A conversation or turn id as given, or InvalidId."""
    if not ID_PATTERN.fullmatch(value):
        raise InvalidId()
    return value


def check_user_id(value: str) -> str:
    """A user id a seed client named, or InvalidUserId."""
    if not USER_ID_PATTERN.fullmatch(value):
        raise InvalidUserId()
    return value
