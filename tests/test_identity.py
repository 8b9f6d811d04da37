"""Who may see what: the signed identity cookie, claiming a user_id, and ownership."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import (
    api_turn,
    create_session,
    history_of,
    messages_of,
    post_turn,
    read_events,
    start_chat,
    stream_turn,
    unique,
)
from tests.fake_upstream import ThreadedFakeUpstream


def test_identity_cookie_is_httponly_and_samesite_lax(client: httpx.Client) -> None:
    response = client.post("/chat/start")

    assert response.status_code == 200
    cookies = [c for c in response.headers.get_list("set-cookie") if c.startswith("chat_uid=")]
    assert len(cookies) == 1, response.headers.get_list("set-cookie")
    attributes = [part.strip().lower() for part in cookies[0].split(";")]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes


def test_identity_cookie_is_signed(client: httpx.Client) -> None:
    chat = start_chat(client)

    assert client.cookies["chat_uid"] != chat["user_id"]


def test_a_client_keeps_its_identity_across_requests(client: httpx.Client) -> None:
    first = start_chat(client)
    second = start_chat(client)

    assert second["user_id"] == first["user_id"]
    assert second["session_id"] != first["session_id"]


def test_each_new_client_gets_its_own_anonymous_id(
    make_client: Callable[..., httpx.Client],
) -> None:
    ids = {start_chat(make_client())["user_id"] for _ in range(3)}

    assert len(ids) == 3


def test_first_caller_claims_an_unused_user_id_and_uses_the_seed_flow(
    client: httpx.Client,
) -> None:
    user_id = unique("claim")

    chat = start_chat(client, user_id)
    turn = stream_turn(client, chat, "hello as a claimed id")
    history = history_of(client, chat)

    assert chat["user_id"] == user_id
    assert "chat_uid" in client.cookies
    assert turn.ended and turn.reply["ctx"] == 2
    assert [m["content"] for m in history["messages"]][1:] == ["hello as a claimed id", turn.text]


def test_claimed_user_id_cannot_be_taken_by_another_client(
    make_client: Callable[..., httpx.Client],
) -> None:
    owner, intruder = make_client(), make_client()
    user_id = unique("owned")
    chat = start_chat(owner, user_id)

    response = intruder.post("/chat/start", params={"user_id": user_id})

    assert response.status_code == 403
    assert chat["session_id"] not in response.text


def test_user_id_param_differing_from_cookie_is_forbidden(
    client: httpx.Client, make_client: Callable[..., httpx.Client]
) -> None:
    start_chat(client)
    other = start_chat(make_client())

    unused = client.post("/chat/start", params={"user_id": unique("unused")})
    taken = client.post("/chat/start", params={"user_id": other["user_id"]})

    assert unused.status_code == 403
    assert taken.status_code == 403
    assert other["session_id"] not in taken.text


@pytest.mark.parametrize("user_id", ["has space", "a" * 65, "semi;colon", "ümlaut", "a/b"])
def test_malformed_user_id_is_refused(client: httpx.Client, user_id: str) -> None:
    response = client.post("/chat/start", params={"user_id": user_id})

    assert response.status_code == 400


def test_forged_unsigned_cookie_does_not_grant_the_identity(
    client: httpx.Client, make_client: Callable[..., httpx.Client]
) -> None:
    chat = start_chat(client)
    stream_turn(client, chat, "a private question")
    forger = make_client(cookies={"chat_uid": chat["user_id"]})

    response = forger.get(
        "/chat/history", params={"user_id": chat["user_id"], "session_id": chat["session_id"]}
    )

    assert response.status_code in (403, 404)
    assert "a private question" not in response.text


def test_other_user_cannot_read_or_continue_a_seed_conversation(
    client: httpx.Client, make_client: Callable[..., httpx.Client], upstream: ThreadedFakeUpstream
) -> None:
    owner = start_chat(client)
    secret = unique("secret")
    stream_turn(client, owner, f"{secret} my private question")
    intruder_client = make_client()
    intruder = start_chat(intruder_client)

    own_id = {"user_id": intruder["user_id"], "session_id": owner["session_id"]}
    history = intruder_client.get("/chat/history", params=own_id)
    stream = stream_turn(intruder_client, own_id, f"{secret} let me in")
    owners_id = {"user_id": owner["user_id"], "session_id": owner["session_id"]}
    history_as_owner = intruder_client.get("/chat/history", params=owners_id)
    stream_as_owner = stream_turn(intruder_client, owners_id, f"{secret} let me in")

    assert history.status_code == 404
    assert stream.status == 404
    assert history_as_owner.status_code in (403, 404)
    assert stream_as_owner.status in (403, 404)
    for response_text in (history.text, history_as_owner.text):
        assert "my private question" not in response_text
    assert len(upstream.chat_requests(secret)) == 1
    assert history_of(client, owner)["total"] == 3


def test_other_user_cannot_touch_sessions_through_the_resource_api(
    client: httpx.Client, make_client: Callable[..., httpx.Client]
) -> None:
    session = create_session(client, "teacher")
    api_turn(client, session["id"], "owner's question")
    intruder = make_client()
    sid = session["id"]

    responses = {
        "get": intruder.get(f"/api/sessions/{sid}"),
        "messages": intruder.get(f"/api/sessions/{sid}/messages"),
        "rename": intruder.patch(f"/api/sessions/{sid}", json={"title": "mine now"}),
        "delete": intruder.delete(f"/api/sessions/{sid}"),
        "turn": post_turn(intruder, sid, "let me in"),
    }
    listing = intruder.get("/api/sessions")

    assert {name: r.status_code for name, r in responses.items()} == dict.fromkeys(responses, 404)
    assert all("owner's question" not in r.text for r in responses.values())
    assert listing.status_code == 200
    assert sid not in {item["id"] for item in listing.json()["items"]}
    # the owner's conversation is untouched
    assert client.get(f"/api/sessions/{sid}").json()["title"] != "mine now"
    contents = [m["content"] for m in messages_of(client, sid)["items"]]
    assert "owner's question" in contents and "let me in" not in contents


def test_other_user_cannot_follow_or_cancel_a_running_turn(
    client: httpx.Client, make_client: Callable[..., httpx.Client]
) -> None:
    session = create_session(client)
    response = post_turn(client, session["id"], "slow one [[tokens:30]] [[delay:20]]")
    assert response.status_code == 202
    turn_id = response.json()["turn_id"]
    intruder = make_client()

    events = intruder.get(f"/api/turns/{turn_id}/events")
    cancel = intruder.post(f"/api/turns/{turn_id}/cancel")

    assert events.status_code == 404
    assert cancel.status_code == 404
    turn = read_events(client, response.json()["events_url"])
    assert turn.ended and turn.reply["filler"] == 27
