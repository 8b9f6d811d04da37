"""A turn's life: context sent upstream, roles, one turn at a time, resume, disconnect, cancel."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from tests.conftest import (
    KEYS,
    SYSTEM_PROMPTS,
    WELCOME,
    TurnRef,
    all_keys,
    api_turn,
    create_session,
    history_of,
    iter_sse,
    messages_of,
    owner_of,
    post_turn,
    read_events,
    start_chat,
    stream_turn,
    unique,
    wait_until,
)
from tests.fake_upstream import ThreadedFakeUpstream, expected_reply, expected_sys_tag

CONTEXT_MESSAGES = 20
CONTEXT_CHARS = 24000
SLOW = "[[tokens:60]] [[delay:30]]"  # about two seconds of reply


def test_posted_turn_streams_its_reply_from_the_events_url(client: httpx.Client) -> None:
    session = create_session(client)

    response = post_turn(client, session["id"], "hello there")
    assert response.status_code == 202
    accepted = response.json()
    turn = read_events(client, accepted["events_url"])

    assert turn.status == 200 and turn.ended and not turn.errors
    assert {e.turn_id for e in turn.events} == {accepted["turn_id"]}
    assert turn.events[-1].data == {"type": "end", "session_id": session["id"]}
    assert turn.text == expected_reply(2, SYSTEM_PROMPTS["assistant"], "hello there", 12)


def test_session_role_is_used_and_a_turn_can_switch_it(client: httpx.Client) -> None:
    session = create_session(client, "teacher")

    as_teacher = api_turn(client, session["id"], "explain recursion")
    switched = api_turn(client, session["id"], "now show code", role="programmer")
    remembered = api_turn(client, session["id"], "and again")

    assert as_teacher.reply["sys"] == expected_sys_tag(SYSTEM_PROMPTS["teacher"])
    assert switched.reply["sys"] == expected_sys_tag(SYSTEM_PROMPTS["programmer"])
    assert remembered.reply["sys"] == expected_sys_tag(SYSTEM_PROMPTS["programmer"])
    assert client.get(f"/api/sessions/{session['id']}").json()["role"] == "programmer"
    assert [t.reply["ctx"] for t in (as_teacher, switched, remembered)] == [2, 4, 6]


def test_turn_with_unknown_role_is_refused(client: httpx.Client) -> None:
    session = create_session(client)

    response = post_turn(client, session["id"], "hi", role="pirate")

    assert response.status_code == 400
    assert response.json() == {"detail": "不支持的AI角色"}


def test_context_is_capped_at_the_latest_20_messages(
    client: httpx.Client, upstream: ThreadedFakeUpstream
) -> None:
    session = create_session(client)
    marker = unique("window")

    contexts = [
        api_turn(client, session["id"], f"{marker} turn {n}").reply["ctx"] for n in range(1, 13)
    ]

    assert contexts == [min(2 * n, CONTEXT_MESSAGES) for n in range(1, 13)]
    sent = upstream.chat_requests(marker)[-1]["messages"]
    assert sent[0]["role"] == "system"
    assert sent[-1] == {"role": "user", "content": f"{marker} turn 12"}
    assert WELCOME not in [m["content"] for m in sent], "the oldest messages are dropped first"
    # the window is the *latest* messages: the previous question is right before the reply to it
    assert sent[-3] == {"role": "user", "content": f"{marker} turn 11"}


def test_context_is_trimmed_to_the_character_budget(
    client: httpx.Client, upstream: ThreadedFakeUpstream
) -> None:
    session = create_session(client)
    marker = unique("budget")
    sent_messages = []

    for n in range(1, 11):
        # ~1000-char questions with ~3500-char replies: the 20-message window would exceed 24000
        head = f"{marker} q{n} [[tokens:800]] [[delay:0]] [[ttft:0]] "
        message = head + "z" * (1000 - len(head))
        turn = api_turn(client, session["id"], message)
        assert turn.ended
        sent_messages.append(message)

    requests = upstream.chat_requests(marker)
    assert len(requests) == 10
    for request, message in zip(requests, sent_messages):
        conversation = [m for m in request["messages"] if m["role"] != "system"]
        assert sum(len(m["content"]) for m in conversation) <= CONTEXT_CHARS
        assert conversation[-1] == {"role": "user", "content": message}
    last = [m for m in requests[-1]["messages"] if m["role"] != "system"]
    assert len(last) < CONTEXT_MESSAGES, "the character budget, not the message count, trimmed it"
    assert sum(len(m["content"]) for m in last) > CONTEXT_CHARS - 5000, "trimmed no more than needed"


def test_only_one_turn_runs_per_session(client: httpx.Client) -> None:
    chat = start_chat(client)
    sid = chat["session_id"]
    first = post_turn(client, sid, f"slow {SLOW}")
    assert first.status_code == 202

    second = post_turn(client, sid, "me too")
    seed = stream_turn(client, chat, "me too")
    running = client.get(f"/api/sessions/{sid}").json()["running_turn_id"]
    finished = read_events(client, first.json()["events_url"])
    after = post_turn(client, sid, "my turn now")

    assert second.status_code == 409
    assert seed.status == 409
    assert running == first.json()["turn_id"]
    assert finished.ended
    assert after.status_code == 202
    read_events(client, after.json()["events_url"])
    contents = [m["content"] for m in messages_of(client, sid)["items"]]
    assert "me too" not in contents
    assert contents.count("my turn now") == 1


def test_reconnect_with_last_event_id_resumes_without_resending(
    client: httpx.Client, upstream: ThreadedFakeUpstream
) -> None:
    chat = start_chat(client)
    message = f"{unique('resume')} [[tokens:40]] [[delay:30]]"
    params = {"user_id": chat["user_id"], "session_id": chat["session_id"], "message": message}

    with client.stream("GET", "/chat/stream", params=params) as response:
        seen = []
        for event in iter_sse(response):
            seen.append(event)
            if event.type == "chunk":
                break  # the page reloads
    with client.stream(
        "GET", "/chat/stream", params=params, headers={"Last-Event-ID": seen[-1].id}
    ) as response:
        assert response.status_code == 200
        rest = list(iter_sse(response))

    assert {e.turn_id for e in rest} == {seen[-1].turn_id}
    assert min(e.seq for e in rest) > seen[-1].seq
    assert rest[-1].type == "end"
    text = "".join(e.data["content"] for e in seen + rest if e.type == "chunk")
    assert text == expected_reply(2, SYSTEM_PROMPTS["assistant"], message, 40)
    assert len(upstream.chat_requests(message)) == 1
    history = history_of(client, chat)["messages"]
    assert [m["content"] for m in history] == [WELCOME, message, text]


def test_resuming_a_finished_turn_replays_what_was_missed(client: httpx.Client) -> None:
    session = create_session(client)
    response = post_turn(client, session["id"], "finish without me")
    events_url = response.json()["events_url"]
    full = read_events(client, events_url)
    first, end = full.events[0], full.events[-1]

    replay = read_events(client, events_url, headers={"Last-Event-ID": first.id})
    nothing_left = client.get(events_url, headers={"Last-Event-ID": end.id})

    assert replay.status == 200 and replay.ended
    assert first.data["content"] + replay.text == full.text
    assert nothing_left.status_code == 204


def test_reply_is_saved_when_the_client_disconnects_mid_stream(client: httpx.Client) -> None:
    chat = start_chat(client)
    message = f"{unique('gone')} {SLOW}"
    params = {"user_id": chat["user_id"], "session_id": chat["session_id"], "message": message}

    with client.stream("GET", "/chat/stream", params=params) as response:
        for event in iter_sse(response):
            if event.type == "chunk":
                break  # the tab is closed

    def saved_reply() -> dict | None:
        last = messages_of(client, chat["session_id"])["items"][-1]
        return last if last["role"] == "assistant" and last["status"] != "error" and "t57" in last["content"] else None

    reply = wait_until(saved_reply, timeout=10, interval=0.2)
    assert reply["status"] == "complete"
    assert reply["content"] == expected_reply(2, SYSTEM_PROMPTS["assistant"], message, 60)
    assert client.get(f"/api/sessions/{chat['session_id']}").json()["running_turn_id"] is None


def test_cancelled_turn_keeps_the_partial_reply_as_interrupted(client: httpx.Client) -> None:
    session = create_session(client)
    message = "stop me [[tokens:100]] [[delay:30]]"  # three seconds if never cancelled
    accepted = post_turn(client, session["id"], message).json()
    shown: list[str] = []

    started = time.monotonic()
    with client.stream("GET", accepted["events_url"]) as response:
        for event in iter_sse(response):
            if event.type == "chunk":
                shown.append(event.data["content"])
                if len(shown) == 1:
                    cancel = client.post(f"/api/turns/{accepted['turn_id']}/cancel")
                    assert cancel.status_code == 202
    stream_closed_after = time.monotonic() - started

    full = expected_reply(2, SYSTEM_PROMPTS["assistant"], message, 100)
    assert stream_closed_after < 2, "the stream should stop soon after the cancel"

    def interrupted() -> dict | None:
        last = messages_of(client, session["id"])["items"][-1]
        return last if last["role"] == "assistant" else None

    reply = wait_until(interrupted, timeout=5)
    assert reply["status"] == "interrupted"
    assert reply["content"].startswith("".join(shown))
    assert full.startswith(reply["content"]) and len(reply["content"]) < len(full)
    assert client.get(f"/api/sessions/{session['id']}").json()["running_turn_id"] is None
    assert api_turn(client, session["id"], "carry on").ended


def test_simultaneous_turns_in_one_session_let_exactly_one_through(client: httpx.Client) -> None:
    session = create_session(client)
    barrier = threading.Barrier(6)

    def post(n: int) -> httpx.Response:
        barrier.wait()
        return post_turn(client, session["id"], f"racer {n} {SLOW}")

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(post, range(6)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] + [409] * 5
    winner = next(r for r in responses if r.status_code == 202).json()
    client.post(f"/api/turns/{winner['turn_id']}/cancel")
    wait_until(lambda: client.get(f"/api/sessions/{session['id']}").json()["running_turn_id"] is None)
    users = [m for m in messages_of(client, session["id"])["items"] if m["role"] == "user"]
    assert len(users) == 1


def test_session_deleted_during_a_turn_stays_deleted(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    chat = start_chat(client)
    sid = chat["session_id"]
    accepted = post_turn(client, sid, "[[tokens:20]] [[delay:20]] delete me meanwhile").json()

    deleted = client.delete(f"/api/sessions/{sid}")
    read_events(client, accepted["events_url"])  # the turn ends, whichever way
    time.sleep(0.3)

    assert deleted.status_code == 204
    assert client.get(f"/api/sessions/{sid}").status_code == 404
    assert sid not in {item["id"] for item in client.get("/api/sessions").json()["items"]}
    history = client.get("/chat/history", params={"user_id": chat["user_id"], "session_id": sid})
    assert history.status_code == 404
    # nothing of it is left behind in Redis to live forever
    leftovers = [k for k in all_keys(redis_client, f"{KEYS.owner(chat['user_id'])}:*{sid}*")
                 if redis_client.ttl(k) == -1]
    assert leftovers == []


def test_a_conversation_in_use_does_not_expire(
    client: httpx.Client, redis_client: redis.Redis
) -> None:
    chat = start_chat(client)
    stream_turn(client, chat, "first")
    messages_key = KEYS.messages(chat["user_id"], chat["session_id"])
    redis_client.expire(messages_key, 60)  # as if the last visit was almost 7 days ago

    stream_turn(client, chat, "back again")

    assert redis_client.ttl(messages_key) > 7 * 86400 - 120
    assert [m["content"] for m in history_of(client, chat)["messages"]][-2] == "back again"


def test_deleting_a_conversation_stops_its_reply_and_leaves_nothing_behind(client, redis_client) -> None:
    from tests.conftest import create_session, post_turn, unique, wait_until

    session = create_session(client)
    started = post_turn(client, session["id"], unique("bye") + " [[tokens:300]] [[delay:20]]").json()
    time.sleep(0.3)
    uid = owner_of(redis_client, session["id"])
    assert client.delete(f"/api/sessions/{session['id']}").status_code == 204
    turn_key = KEYS.turn(TurnRef(uid, started["turn_id"]))
    wait_until(lambda: redis_client.hget(turn_key, "status") == "interrupted", timeout=5)
    assert not redis_client.exists(KEYS.meta(uid, session["id"]))
    assert not redis_client.exists(KEYS.messages(uid, session["id"]))
    assert client.get(f"/api/sessions/{session['id']}").status_code == 404


def test_a_seed_turn_without_a_role_keeps_the_conversations_role(client) -> None:
    from tests.conftest import create_session, unique
    from tests.fake_upstream import expected_sys_tag
    from webapp.core.roles import get_role

    session = create_session(client, role="teacher")
    with client.stream(
        "GET", "/chat/stream", params={"session_id": session["id"], "message": unique("role")}
    ) as response:
        text = "".join(
            line[5:].strip() for line in response.iter_lines() if line.startswith("data:") and '"chunk"' in line
        )
    assert expected_sys_tag(get_role("teacher").system_prompt) in text
    assert client.get(f"/api/sessions/{session['id']}").json()["role"] == "teacher"
