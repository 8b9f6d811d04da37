"""A host killed mid-reply (SIGKILL: no shutdown code runs) frees its conversation within
seconds: its turn is saved as `interrupted` with the text written so far, every reader's
stream ends, and the conversation takes new turns. On one Redis and on a Cluster
(TEST_REDIS=cluster)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ON_CLUSTER,
    AppServer,
    RedisServer,
    ThreadedFakeUpstream,
    _start_app,
    _stop_app,
    create_session,
    iter_sse,
    messages_of,
    post_turn,
    unique,
    wait_until,
)

RECOVERY_SECONDS = 10  # the promise: within 10 s of the kill (TURN_LEASE_SECONDS is 5 by default)


def app_on(redis_server: RedisServer, upstream: ThreadedFakeUpstream, directory: Path,
           **settings: str) -> AppServer:
    directory.mkdir(parents=True, exist_ok=True)
    return _start_app(directory, {
        **settings, "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_MODEL": "fake-model",
    })


def test_a_host_killed_mid_reply_frees_its_conversation_within_10_seconds(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path: Path
) -> None:
    doomed = app_on(redis_server, upstream, tmp_path / "doomed")
    survivor = app_on(redis_server, upstream, tmp_path / "survivor")
    try:
        with httpx.Client(base_url=doomed.base_url, timeout=30) as on_doomed:
            session = create_session(on_doomed)
            started = post_turn(on_doomed, session["id"], unique("long") + " [[tokens:600]] [[delay:30]]").json()
            cookies = on_doomed.cookies
        events: list[Any] = []
        ended = threading.Event()

        def follow_on_survivor() -> None:
            with httpx.Client(base_url=survivor.base_url, timeout=60, cookies=cookies) as reader:
                with reader.stream("GET", started["events_url"]) as response:
                    assert response.status_code == 200
                    for event in iter_sse(response):
                        events.append(event)
            ended.set()

        thread = threading.Thread(target=follow_on_survivor, daemon=True)
        thread.start()
        wait_until(lambda: sum(1 for e in events if e.type == "chunk") >= 5, timeout=15)
        time.sleep(0.5)  # some text is in Redis (the writer flushes every 100 ms)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=10)
        killed_at = time.monotonic()

        assert ended.wait(RECOVERY_SECONDS + 2), "the reader on the other host still hangs"
        reader_ended_after = time.monotonic() - killed_at
        assert events[-1].type == "error" and not any(e.type == "end" for e in events)
        streamed = "".join(e.data["content"] for e in events if e.type == "chunk")

        with httpx.Client(base_url=survivor.base_url, timeout=30, cookies=cookies) as on_survivor:
            items = messages_of(on_survivor, session["id"])["items"]
            reply = items[-1]
            assert reply["role"] == "assistant" and reply["status"] == "interrupted"
            # what was written so far is kept; at most one flush interval of text may be lost
            assert reply["content"] and streamed.startswith(reply["content"][: len(streamed) // 2])
            # the conversation takes a new turn: no 409 for TURN_TIMEOUT_SECONDS
            next_turn = post_turn(on_survivor, session["id"], unique("again"))
            freed_after = time.monotonic() - killed_at
            assert next_turn.status_code == 202, next_turn.text
            with on_survivor.stream("GET", next_turn.json()["events_url"]) as response:
                assert [e.type for e in iter_sse(response)][-1] == "end"
            contents = [m["content"] for m in messages_of(on_survivor, session["id"])["items"]]
            assert contents.count(reply["content"]) == 1  # saved once, in its place, before the new message
        assert reader_ended_after < RECOVERY_SECONDS and freed_after < RECOVERY_SECONDS + 1
        print(f"reader ended {reader_ended_after:.1f} s after the kill; conversation free after {freed_after:.1f} s")
    finally:
        _stop_app(survivor)
        if doomed.process.poll() is None:
            _stop_app(doomed)


def test_a_conversation_whose_host_died_is_freed_by_its_next_message_even_with_no_one_watching(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path: Path
) -> None:
    """Nobody follows the turn and the host restarts: the next send saves the orphan first, in order."""
    first = app_on(redis_server, upstream, tmp_path / "first")
    try:
        with httpx.Client(base_url=first.base_url, timeout=30) as client:
            session = create_session(client)
            post_turn(client, session["id"], unique("cut") + " [[tokens:600]] [[delay:30]]")
            time.sleep(1.5)
            cookies = client.cookies
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        restarted = app_on(redis_server, upstream, tmp_path / "restarted")  # the same host, back
        try:
            with httpx.Client(base_url=restarted.base_url, timeout=30, cookies=cookies) as client:
                # the page does not loop on a streaming bubble for long: the turn ends once the lease lapses
                def page_is_settled() -> bool:
                    return "msg--streaming" not in client.get(f"/c/{session['id']}").text
                wait_until(page_is_settled, timeout=RECOVERY_SECONDS + 2, interval=0.5)
                sent = post_turn(client, session["id"], unique("after"))
                assert sent.status_code == 202, sent.text
                with client.stream("GET", sent.json()["events_url"]) as response:
                    assert [e.type for e in iter_sse(response)][-1] == "end"
                items = messages_of(client, session["id"])["items"]
                roles = [(m["role"], m["status"]) for m in items[-4:]]
                assert roles == [("user", "complete"), ("assistant", "interrupted"),
                                 ("user", "complete"), ("assistant", "complete")], roles
        finally:
            _stop_app(restarted)
    finally:
        if first.process.poll() is None:
            _stop_app(first)


@pytest.mark.parametrize("lease", ["2"])
def test_a_writer_that_lost_its_lease_does_not_save_a_second_reply(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path: Path, lease: str
) -> None:
    """A writer frozen longer than its lease (SIGSTOP: a stalled VM) is recovered by another host;
    when it wakes it stops, and the reply is in the history once."""
    frozen = app_on(redis_server, upstream, tmp_path / "frozen", TURN_LEASE_SECONDS=lease)
    other = app_on(redis_server, upstream, tmp_path / "other", TURN_LEASE_SECONDS=lease)
    try:
        with httpx.Client(base_url=frozen.base_url, timeout=30) as client:
            session = create_session(client)
            post_turn(client, session["id"], unique("frozen") + " [[tokens:200]] [[delay:30]]")
            time.sleep(1)
            cookies = client.cookies
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            with httpx.Client(base_url=other.base_url, timeout=30, cookies=cookies) as client:
                def recovered() -> bool:
                    last = messages_of(client, session["id"])["items"][-1]
                    return last["role"] == "assistant" and last["status"] == "interrupted"
                wait_until(recovered, timeout=10, interval=0.3)
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        time.sleep(3)  # the woken writer notices its lost lease, stops, and does not save again
        with httpx.Client(base_url=other.base_url, timeout=30, cookies=cookies) as client:
            items = messages_of(client, session["id"])["items"]
            assistants = [m for m in items[1:] if m["role"] == "assistant"]  # (after the welcome)
            assert len(assistants) == 1 and assistants[0]["status"] == "interrupted", assistants
            assert post_turn(client, session["id"], unique("next")).status_code == 202
    finally:
        _stop_app(other)
        _stop_app(frozen)


def test_a_lease_that_lapsed_while_its_writer_was_only_slow_is_taken_again(
    client: httpx.Client, redis_client: Any
) -> None:
    """The lock expiring under a live writer (an overloaded host renewing late) costs nothing when
    no other host has begun to recover the turn: the writer takes its lease again and saves once."""
    from tests.conftest import KEYS, owner_of

    session = create_session(client)
    started = post_turn(client, session["id"], unique("slow") + " [[tokens:120]] [[delay:25]]").json()
    lock = KEYS.lock(owner_of(redis_client, session["id"]), session["id"])
    wait_until(lambda: redis_client.get(lock) == started["turn_id"], timeout=5)
    redis_client.delete(lock)  # as if it had expired
    wait_until(lambda: redis_client.get(lock) == started["turn_id"], timeout=3)  # renewed: taken again
    with client.stream("GET", started["events_url"]) as response:
        types = [e.type for e in iter_sse(response)]
    assert types[-1] == "end" and "error" not in types
    replies = [m for m in messages_of(client, session["id"])["items"][1:] if m["role"] == "assistant"]
    assert len(replies) == 1 and replies[0]["status"] == "complete"


def test_a_pages_channel_whose_host_died_mid_reply_resumes_on_another_host(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path: Path
) -> None:
    """The web UI: a page's channel follows a reply on the host that writes it; the host is killed. The
    browser reconnects (Last-Event-ID) through the balancer to the other host, which picks the reply
    up from Redis after the last event shown and ends it as interrupted once the lease lapses."""
    from bs4 import BeautifulSoup

    from tests.conftest import with_page_token
    from tests.test_channels import ChannelReader

    doomed = app_on(redis_server, upstream, tmp_path / "doomed")
    survivor = app_on(redis_server, upstream, tmp_path / "survivor")
    try:
        with httpx.Client(base_url=doomed.base_url, timeout=30) as on_doomed:
            on_doomed.event_hooks["request"].append(with_page_token(on_doomed))
            session_id = create_session(on_doomed)["id"]
            page = BeautifulSoup(on_doomed.get(f"/c/{session_id}").text, "html.parser")
            url = page.select_one(".chat__inner")["sse-connect"]
            channel_id = page.select_one('#composer input[name="channel"]')["value"]
            channel = ChannelReader(on_doomed, url)
            answer = on_doomed.post(f"/c/{session_id}/messages", headers={"HX-Request": "true"}, data={
                "message": unique("long") + " [[tokens:600]] [[delay:30]]", "channel": channel_id})
            assert answer.status_code == 200 and answer.headers["x-turn-id"]
            seen = [channel.next()]
            while sum(1 for e in seen if e.event == "chunk") < 5:
                seen.append(channel.next())
            cookies = on_doomed.cookies
        time.sleep(0.5)  # some text is in Redis (the writer flushes every 100 ms)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=10)
        channel.close()
        with httpx.Client(base_url=survivor.base_url, timeout=30, cookies=cookies) as on_survivor:
            again = ChannelReader(on_survivor, url, {"Last-Event-ID": seen[-1].id})
            try:
                rest = [again.next(RECOVERY_SECONDS + 5)]
                while rest[-1].event != "done":
                    rest.append(again.next(RECOVERY_SECONDS + 5))
            finally:
                again.close()
            assert rest[0].event in ("chunk", "done") and all(e.seq > seen[-1].seq for e in rest if e.event == "chunk")
            done = BeautifulSoup(rest[-1].data, "html.parser")
            assert done.select_one(".msg--interrupted"), rest[-1].data[:300]
            assert messages_of(on_survivor, session_id)["items"][-1]["status"] == "interrupted"
    finally:
        _stop_app(survivor)
        if doomed.process.poll() is None:
            _stop_app(doomed)


def _drop_subscribers(redis_client: Any) -> None:
    """Close every pub/sub connection (as a network blip or a Redis failover would): a message
    published before its subscriber is back reaches no one."""
    if ON_CLUSTER:
        redis_client.client_kill_filter(_type="pubsub", target_nodes=redis_client.ALL_NODES)
    else:
        redis_client.client_kill_filter(_type="pubsub")


def test_a_stop_asked_on_another_host_while_the_writers_subscription_was_down_still_stops_the_reply(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, redis_client: Any, tmp_path: Path
) -> None:
    """A Stop reaches the writer's host by pub/sub, which drops what it publishes while the writer
    is not subscribed; the mark it leaves on the turn stops the reply at the writer's next lease
    renewal (about a second) instead of letting it run to the end."""
    writer = app_on(redis_server, upstream, tmp_path / "writer")
    other = app_on(redis_server, upstream, tmp_path / "other")
    try:
        with httpx.Client(base_url=writer.base_url, timeout=30) as on_writer:
            session = create_session(on_writer)
            started = post_turn(on_writer, session["id"], unique("stop") + " [[tokens:300]] [[delay:30]]").json()
            cookies = on_writer.cookies
            time.sleep(0.5)
        with httpx.Client(base_url=other.base_url, timeout=30, cookies=cookies) as on_other:
            _drop_subscribers(redis_client)  # (the writer subscribes again a second later)
            asked = time.monotonic()
            assert on_other.post(f"/api/turns/{started['turn_id']}/cancel").status_code == 202

            def saved() -> dict | None:
                items = messages_of(on_other, session["id"])["items"]
                return items[-1] if items[-1]["role"] == "assistant" and len(items) == 3 else None

            last = wait_until(saved, timeout=15, interval=0.1)
            stopped_after = time.monotonic() - asked
        # stopped, not interrupted by a failure, and long before the reply's 9 s
        assert last["status"] == "interrupted" and " t290" not in last["content"], last
        assert stopped_after < 4, stopped_after
        with httpx.Client(base_url=writer.base_url, timeout=30, cookies=cookies) as on_writer:
            assert post_turn(on_writer, session["id"], unique("next")).status_code == 202
    finally:
        _stop_app(other)
        _stop_app(writer)
