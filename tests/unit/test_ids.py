"""Which ids reach Redis: UUID4 conversation/turn ids and seed-style user ids (webapp/ids.py)."""

from __future__ import annotations

import uuid

import pytest

from webapp.base.errors import InvalidId, InvalidUserId
from webapp.base.ids import check_id, check_user_id


def test_an_app_made_uuid_is_accepted_as_given() -> None:
    value = str(uuid.uuid4())
    assert check_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-a-uuid",
        "0F1E2D3C-4B5A-4968-8776-655443322110",  # the app only makes lowercase ids
        "0f1e2d3c4b5a49688776655443322110",  # no dashes
        "0f1e2d3c-4b5a-4968-8776-655443322110\n",
        " 0f1e2d3c-4b5a-4968-8776-655443322110",
        "0f1e2d3c-4b5a-4968-8776-655443322110x",
        "*",
    ],
)
def test_an_id_of_any_other_shape_is_invalid(value: str) -> None:
    with pytest.raises(InvalidId):
        check_id(value)


@pytest.mark.parametrize("value", ["u_0123abcd", "alice", "user-1.test", "A" * 64, "_"])
def test_a_user_id_of_letters_digits_dot_dash_underscore_is_accepted(value: str) -> None:
    assert check_user_id(value) == value


@pytest.mark.parametrize("value", ["", "A" * 65, "a b", "a:b", "a*", "用户", "alice\n", "a/b"])
def test_a_user_id_that_could_break_a_key_or_is_too_long_is_invalid(value: str) -> None:
    with pytest.raises(InvalidUserId):
        check_user_id(value)
