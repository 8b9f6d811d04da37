"""Regenerate, edit and resend, retry and versions over real HTTP: durable and idempotent.

The fake model's reply says how many messages it received and the first words of the last
one (`ctx=N ... last=...`), so every test can check that the model saw exactly the active branch.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import (
    KEYS,
    RedisServer,
    _start_app,
    _stop_app,
    create_session,
    iter_sse,
    messages_of,
    owner_of,
    page_token,
    parse_reply,
    read_events,
    unique,
)
from tests.fake_upstream import ThreadedFakeUpstream


def send(client: httpx.Client, session_id: str, text: str, **headers: str) -> dict[str, Any]:
    response = client.post(f"/api/sessions/{session_id}/turns", json={"message": text}, headers=headers)
    assert response.status_code == 202, response.text
    turn = read_events(client, response.json()["events_url"])
    return {"turn_id": response.json()["turn_id"], "text": turn.text, "ended": turn.ended, "turn": turn}


def follow(client: httpx.Client, response: httpx.Response) -> Any:
    assert response.status_code == 202, response.text
    return read_events(client, response.json()["events_url"])


def branch(client: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    return messages_of(client, session_id, limit=200)["items"]


def test_regenerate_keeps_every_version_and_the_shown_one_is_the_context(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    first = send(client, sid, "question one")
    second = follow(client, client.post(f"/api/turns/{first['turn_id']}/regenerate"))
    third = follow(client, client.post(f"/api/turns/{second.turn_id}/regenerate"))
    assert first["ended"] and second.ended and third.ended
    items = branch(client, sid)
    assert [m["role"] for m in items] == ["assistant", "user", "assistant"]  # never the message twice
    reply = items[-1]
    assert (reply["version"], reply["versions"]) == (3, 3) and reply["content"] == third.text
    assert parse_reply(third.text)["ctx"] == 2  # the welcome and the question: not the older replies

    # flip back to the first version: later turns see it
    chosen = client.post(f"/api/sessions/{sid}/messages/{reply['index']}/version", json={"version": 1})
    assert chosen.status_code == 200
    items = branch(client, sid)
    assert items[-1]["content"] == first["text"] and (items[-1]["version"], items[-1]["versions"]) == (1, 3)
    after = send(client, sid, "question two")
    assert parse_reply(after["text"])["ctx"] == 4
    assert branch(client, sid)[-3]["content"] == first["text"]
    # the other versions are still there
    assert client.post(f"/api/sessions/{sid}/messages/{reply['index']}/version", json={"version": 2}).status_code == 200
    items = branch(client, sid)
    assert items[-1]["content"] == second.text and len(items) == 3  # version 2 has nothing after it
    assert client.post(f"/api/sessions/{sid}/messages/{reply['index']}/version", json={"version": 1}).status_code == 200
    assert [m["content"] for m in branch(client, sid)][-2:] == ["question two", after["text"]]


def test_only_the_last_reply_can_be_regenerated(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    first = send(client, sid, "one")
    send(client, sid, "two")
    stale = client.post(f"/api/turns/{first['turn_id']}/regenerate")
    assert stale.status_code == 409


def test_edit_and_resend_makes_a_branch_and_the_old_one_stays(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    for text in ("alpha", "beta", "gamma", "delta"):
        send(client, sid, text)
    items = branch(client, sid)
    beta = next(m for m in items if m["content"] == "beta")
    edited = follow(client, client.patch(f"/api/messages/{beta['id']}", json={"content": "beta, edited"}))
    assert parse_reply(edited.text)["ctx"] == 4  # welcome, alpha, its reply, the edited message
    items = branch(client, sid)
    assert [m["content"] for m in items if m["role"] == "user"] == ["alpha", "beta, edited"]
    assert (items[3]["version"], items[3]["versions"]) == (2, 2)
    # flip back: the old branch, with its later messages, returns whole
    assert client.post(f"/api/sessions/{sid}/messages/3/version", json={"version": 1}).status_code == 200
    items = branch(client, sid)
    assert [m["content"] for m in items if m["role"] == "user"] == ["alpha", "beta", "gamma", "delta"]
    again = send(client, sid, "epsilon")
    assert parse_reply(again["text"])["ctx"] == 10
    assert client.post(f"/api/sessions/{sid}/messages/3/version", json={"version": 2}).status_code == 200
    assert [m["content"] for m in branch(client, sid) if m["role"] == "user"] == ["alpha", "beta, edited"]


@pytest.mark.parametrize("failure", ["[[fail:400]]", "[[drop:3]]"])  # (a 500 the app retries by itself)
def test_retry_after_a_failure_answers_the_same_message_without_storing_it_twice(
    client: httpx.Client, failure: str
) -> None:
    sid = create_session(client)["id"]
    text = f"{unique('fails once')} {failure} [[once]]"
    failed = send(client, sid, text)
    assert not failed["ended"] and failed["turn"].errors
    retried = follow(client, client.post(f"/api/turns/{failed['turn_id']}/regenerate"))
    assert retried.ended
    assert parse_reply(retried.text)["ctx"] == 2  # the welcome and the message, once
    items = branch(client, sid)
    assert [m["content"] for m in items if m["role"] == "user"] == [text]
    assert items[-1]["content"] == retried.text and items[-1]["status"] == "complete"
    if failure == "[[drop:3]]":  # the partial reply of the dropped turn stays, as version 1
        assert (items[-1]["version"], items[-1]["versions"]) == (2, 2)


def test_duplicate_requests_with_one_request_id_start_one_turn(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client()
    sid = create_session(client)["id"]
    key = {"Idempotency-Key": unique("rid")}
    answers: list[httpx.Response] = []

    def post() -> None:
        with httpx.Client(base_url=str(client.base_url), cookies=client.cookies, timeout=30) as own:
            answers.append(own.post(f"/api/sessions/{sid}/turns", json={"message": "only once"}, headers=key))

    threads = [threading.Thread(target=post) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [202] * 5
    assert len({a.json()["turn_id"] for a in answers}) == 1
    read_events(client, answers[0].json()["events_url"])
    assert [m["content"] for m in branch(client, sid) if m["role"] == "user"] == ["only once"]
    again = client.post(f"/api/sessions/{sid}/turns", json={"message": "only once"}, headers=key)
    assert again.json()["turn_id"] == answers[0].json()["turn_id"]


def test_two_clients_racing_to_regenerate_leave_one_consistent_history(
    make_client: Callable[..., httpx.Client],
) -> None:
    tab = make_client()
    sid = create_session(tab)["id"]
    first = send(tab, sid, "race me")
    other = make_client(cookies=tab.cookies)
    answers: list[httpx.Response] = []

    def regenerate(client: httpx.Client) -> None:
        answers.append(client.post(f"/api/turns/{first['turn_id']}/regenerate"))

    threads = [threading.Thread(target=regenerate, args=(c,)) for c in (tab, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([202, 409], [202, 202])
    for answer in answers:
        if answer.status_code == 202:
            read_events(tab, answer.json()["events_url"])
    items = branch(tab, sid)
    assert [m["role"] for m in items] == ["assistant", "user", "assistant"]
    assert items[-1]["versions"] == statuses.count(202) + 1


def test_a_turns_redis_cost_stays_the_same_with_versions(client: httpx.Client, redis_client: redis.Redis) -> None:
    sid = create_session(client)["id"]
    first = send(client, sid, "cost")
    follow(client, client.post(f"/api/turns/{first['turn_id']}/regenerate"))
    uid = owner_of(redis_client, sid)
    assert redis_client.hlen(KEYS.forks(uid, sid)) == 1
    assert redis_client.llen(KEYS.messages(uid, sid)) == 3


def test_stop_regenerate_and_edit_from_two_tabs_leave_one_consistent_history(
    make_client: Callable[..., httpx.Client],
) -> None:
    one = make_client()
    sid = create_session(one)["id"]
    two = make_client(cookies=one.cookies)
    first = send(one, sid, "slow start [[tokens:60]] [[delay:20]]")
    question = branch(one, sid)[1]
    # tab one regenerates a slow reply; tab two stops it, then edits the question, while tab one
    # tries to regenerate again: whatever interleaving, one reply per active turn, nothing orphaned
    slow = one.post(f"/api/turns/{first['turn_id']}/regenerate")
    assert slow.status_code == 202
    assert two.post(f"/api/turns/{slow.json()['turn_id']}/cancel").status_code == 202
    read_events(one, slow.json()["events_url"])
    answers: list[httpx.Response] = []

    def edit() -> None:
        answers.append(two.patch(f"/api/messages/{question['id']}", json={"content": "slow start, edited"}))

    def regenerate() -> None:
        answers.append(one.post(f"/api/turns/{slow.json()['turn_id']}/regenerate"))

    threads = [threading.Thread(target=edit), threading.Thread(target=regenerate)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) in ([202, 409], [202, 202])
    for answer in answers:
        if answer.status_code == 202:
            read_events(one, answer.json()["events_url"])
    items = branch(one, sid)
    roles = [m["role"] for m in items]
    assert roles == ["assistant", "user", "assistant"], roles  # one reply for the active turn
    # every version of the question and of the reply is reachable and whole
    for index in (1, 2):
        count = items[index]["versions"]
        for version in range(1, count + 1) if count > 1 else ():
            moved = one.post(f"/api/sessions/{sid}/messages/{index}/version", json={"version": version})
            assert moved.status_code == 200
            shown = branch(one, sid)
            assert shown[index]["version"] == version and [m["role"] for m in shown][:2] == ["assistant", "user"]
        items = branch(one, sid)
        assert [m["role"] for m in items][:2] == ["assistant", "user"]
    history = one.get("/chat/history", params={"session_id": sid}).json()
    assert [m["role"] for m in history["messages"]] == [m["role"] for m in branch(one, sid)]  # the seed's flat list


def test_a_repeated_edit_answers_the_first_turn(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    send(client, sid, "edit me")
    question = branch(client, sid)[1]
    key = {"Idempotency-Key": unique("edit")}
    first = client.patch(f"/api/messages/{question['id']}", json={"content": "edited"}, headers=key)
    again = client.patch(f"/api/messages/{question['id']}", json={"content": "edited"}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["turn_id"] == again.json()["turn_id"]
    read_events(client, first.json()["events_url"])
    assert [m["content"] for m in branch(client, sid) if m["role"] == "user"] == ["edited"]


def test_regenerate_works_after_the_messages_expired_before_the_metadata(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    # messages live 7 days, the conversation's metadata 30: its stored count can be ahead of the list
    sid = create_session(client)["id"]
    send(client, sid, "long ago")
    redis_client.delete(KEYS.messages(owner_of(redis_client, sid), sid))
    fresh = send(client, sid, "back again")
    assert parse_reply(fresh["text"])["ctx"] == 1
    again = follow(client, client.post(f"/api/turns/{fresh['turn_id']}/regenerate"))
    assert again.ended
    items = branch(client, sid)
    assert [m["role"] for m in items] == ["user", "assistant"] and items[-1]["versions"] == 2


def test_another_users_ids_reach_no_version_control(make_client: Callable[..., httpx.Client]) -> None:
    owner, stranger = make_client(), make_client()
    sid = create_session(owner)["id"]
    first = send(owner, sid, "mine alone")
    follow(owner, owner.post(f"/api/turns/{first['turn_id']}/regenerate"))
    before = branch(owner, sid)
    question = before[1]
    create_session(stranger)
    token = page_token(stranger)
    tries = [
        stranger.post(f"/api/turns/{first['turn_id']}/regenerate"),
        stranger.patch(f"/api/messages/{question['id']}", json={"content": "taken over"}),
        stranger.post(f"/api/sessions/{sid}/messages/2/version", json={"version": 1}),
        stranger.post(f"/c/{sid}/regenerate", headers={"X-CSRF-Token": token}),
        stranger.get(f"/c/{sid}/messages/1/edit"),
        stranger.post(f"/c/{sid}/messages/1/edit", data={"message": "taken over", "message_id": question["id"]},
                      headers={"X-CSRF-Token": token}),
        stranger.post(f"/c/{sid}/messages/2/version", data={"to": "1"}, headers={"X-CSRF-Token": token}),
    ]
    assert [t.status_code for t in tries] == [404] * len(tries)
    assert all("mine alone" not in t.text for t in tries)
    assert branch(owner, sid) == before


def test_a_regenerate_killed_mid_reply_keeps_both_versions(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SIGKILL of the host mid-regenerate: once its lock lapses, a reader on another host saves what
    was streamed as an interrupted version 2; version 1 stays reachable; the conversation is usable."""
    settings = {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": "k", "OPENAI_BASE_URL": upstream.base_url,
                "TURN_TIMEOUT_SECONDS": "10", "STREAM_FLUSH_MS": "50"}
    doomed = _start_app(tmp_path_factory.mktemp("doomed"), settings)
    try:
        client = httpx.Client(base_url=doomed.base_url, timeout=30)
        sid = create_session(client)["id"]
        first = send(client, sid, "kill the second answer [[tokens:200]] [[delay:30]]")
        turn = client.post(f"/api/turns/{first['turn_id']}/regenerate",
                           headers={"Idempotency-Key": unique("k")})
        with client.stream("GET", turn.json()["events_url"]) as events:
            for seen, _ in enumerate(iter_sse(events)):
                if seen == 5:
                    break
        time.sleep(0.2)  # (one flush of the stream)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()
    finally:
        _stop_app(doomed)
    survivor = _start_app(tmp_path_factory.mktemp("survivor"), settings)
    try:
        other = httpx.Client(base_url=survivor.base_url, timeout=60, cookies=client.cookies)
        recovered = read_events(other, turn.json()["events_url"])
        assert recovered.errors and not recovered.ended
        items = branch(other, sid)
        assert items[-1]["status"] == "interrupted" and (items[-1]["version"], items[-1]["versions"]) == (2, 2)
        assert other.post(f"/api/sessions/{sid}/messages/2/version", json={"version": 1}).status_code == 200
        assert branch(other, sid)[-1]["content"] == first["text"]
        assert send(other, sid, "still usable")["ended"]
    finally:
        _stop_app(survivor)
