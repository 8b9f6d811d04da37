"""A conversation page's channel: one event stream per open page that carries every turn of it
(channels.py). Over real HTTP against the real app, Redis and fake model; the browser's side is
in test_ui_browser.py."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.conftest import (
    SYSTEM_PROMPTS,
    AppServer,
    RedisServer,
    SSEEvent,
    _start_app,
    _stop_app,
    iter_sse,
    unique,
    wait_until,
    with_page_token,
)
from tests.fake_upstream import ThreadedFakeUpstream, expected_reply
from tests.test_pages_partials import EN, HX, open_home, soup

SLOW = "[[tokens:30]] [[delay:20]]"


def reply_to(text: str, turn: int) -> str:
    """The fake model's reply to `text`, the conversation's `turn`th message (assistant role, 12 tokens)."""
    return expected_reply(2 * turn, SYSTEM_PROMPTS["assistant"], text, 12)


def words(text: str) -> str:
    return " ".join(text.split())


class ChannelReader:
    """A page's channel read on a thread of its own, as the browser keeps it open while it posts
    (an asyncio client there, so that close() really closes the connection, as a closed tab does)."""

    def __init__(self, client: httpx.Client, url: str, headers: dict[str, Any] | None = None) -> None:
        self.events: queue.Queue[SSEEvent | BaseException | None] = queue.Queue()
        self.status = 0
        self.opened = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self._read(client, url, headers),), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the channel did not answer"

    async def _read(self, client: httpx.Client, url: str, headers: dict[str, Any] | None) -> None:
        self.task = asyncio.current_task()
        try:
            async with httpx.AsyncClient(base_url=client.base_url, cookies=client.cookies, timeout=30,
                                         headers=EN) as http:
                async with http.stream("GET", url, headers=headers) as response:
                    self.status = response.status_code
                    self.opened.set()
                    lines: list[str] = []
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line == "":
                            for event in iter_sse(_Lines(lines)):  # type: ignore[arg-type]
                                self.events.put(event)
                            lines = []
        except BaseException as exc:  # closed by the test, or a failure to report
            self.events.put(exc)
        finally:
            self.opened.set()
            self.events.put(None)

    def next(self, timeout: float = 15) -> SSEEvent:
        item = self.events.get(timeout=timeout)
        assert isinstance(item, SSEEvent), f"the channel ended: {item!r}"
        return item

    def until_done(self) -> list[SSEEvent]:
        """Events up to and including the next `done`."""
        events = [self.next()]
        while events[-1].event != "done":
            events.append(self.next())
        return events

    def close(self) -> None:
        if self.task is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(5)


class _Lines:
    """One event's lines, as iter_sse reads a response's."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def iter_lines(self) -> Iterator[str]:
        return iter(self.lines)


@pytest.fixture
def browser_client(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client(headers=EN)


@pytest.fixture
def channels() -> Any:
    opened: list[ChannelReader] = []

    def open_channel(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> ChannelReader:
        reader = ChannelReader(client, url, headers)
        opened.append(reader)
        return reader

    yield open_channel
    for reader in opened:
        reader.close()


def page_channel(page: BeautifulSoup) -> tuple[str, str]:
    """(the channel's URL, its id in the composer) of a conversation page or pane."""
    url = page.select_one(".chat__inner")["sse-connect"]
    channel_id = page.select_one('#composer input[name="channel"]')["value"]
    assert f"channel={channel_id}" in url
    return url, channel_id


def post(client: httpx.Client, session_id: str, text: str, channel_id: str = "", **fields: str) -> httpx.Response:
    data = {"message": text, **({"channel": channel_id} if channel_id else {}), **fields}
    response = client.post(f"/c/{session_id}/messages", data=data, headers={**HX, **EN})
    assert response.status_code == 200, response.text
    return response


def streamed_text(events: list[SSEEvent]) -> str:
    import html
    return "".join(html.unescape(event.data) for event in events if event.event == "chunk")


def test_a_page_keeps_one_stream_that_brings_every_turn(browser_client: httpx.Client, channels: Any) -> None:
    """The composer's post names its page's channel: it answers with no bubbles (and moves the sidebar
    item), and the channel brings the user's bubble, the reply's chunks and its final bubble, turn after
    turn on the same connection."""
    session_id, page = open_home(browser_client)
    url, channel_id = page_channel(page)
    assert page.select_one(".chat__inner")["hx-ext"] == "sse"
    assert page.select_one(".channel-sink")["sse-swap"] == "turn,sync"
    channel = channels(browser_client, url)
    for turn in (1, 2):
        text = f"{unique('channel')} <b>&amp;"
        answer = soup(post(browser_client, session_id, text, channel_id))
        assert not answer.select(".msg"), "the bubbles come on the channel"
        assert answer.select_one(f"ul[hx-swap-oob] #conv-{session_id}")  # the sidebar item moves to the top
        events = channel.until_done()
        started = events[0]
        assert started.event == "turn" and started.seq == 0
        bubbles = BeautifulSoup(started.data, "html.parser")
        wrapper = bubbles.select_one('[hx-swap-oob="beforeend:#message-list"]')
        assert wrapper.select_one(".msg--user .msg__body").get_text().strip() == text
        streaming = wrapper.select_one(f"article#turn-{started.turn_id}.msg--streaming")
        assert not streaming.has_attr("sse-connect"), "the channel, not a stream of its own"
        assert streaming["sse-swap"] == "done" and streaming.select_one(".msg__stream")["sse-swap"] == "chunk"
        assert bubbles.select_one("#composer-actions[hx-swap-oob] .round-btn--stop")
        assert [e.turn_id for e in events] == [started.turn_id] * len(events)
        assert streamed_text(events) == reply_to(text, turn)
        done = BeautifulSoup(events[-1].data, "html.parser")
        assert done.select_one("article.msg--assistant .msg__body")
        assert done.select_one("#composer-actions .round-btn--send")
        update = done.select_one(f'template.session-update[data-item="conv-{session_id}"]')
        assert update is not None and not update.find(attrs={"hx-swap-oob": True})
    history = browser_client.get("/chat/history", params={"session_id": session_id}).json()["messages"]
    assert [m["role"] for m in history] == ["assistant", "user", "assistant", "user", "assistant"]


def test_a_post_that_names_no_open_channel_streams_on_its_own(
    make_client: Callable[..., httpx.Client], channels: Any,
) -> None:
    """No channel named, one not open (yet), or one of another identity: the post answers as without a
    channel, with the bubbles and a stream of the turn's own; nothing is shown twice or to another."""
    owner, other = make_client(headers=EN), make_client(headers=EN)
    session_id, page = open_home(owner)
    url, channel_id = page_channel(page)
    channel = channels(owner, url)
    other_session, _ = open_home(other)
    for client, session, named in ((owner, session_id, ""), (owner, session_id, "not-open"),
                                   (other, other_session, channel_id)):
        answer = soup(post(client, session, unique("alone"), named))
        streaming = answer.select_one("article.msg--streaming")
        assert streaming["sse-connect"].startswith(f"/c/{session}/turns/")
        if client is owner:  # the owner's open page still shows the turn, once: on its channel
            events = channel.until_done()
            assert events[0].event == "turn" and f"turn-{events[0].turn_id}" == streaming["id"]
    # another identity cannot open a channel on the conversation, not even naming a reply being written in it
    assert other.get(url).status_code == 404
    running = soup(post(owner, session_id, f"{unique('running')} {SLOW}"))
    turn_id = running.select_one("article.msg--streaming")["id"].removeprefix("turn-") if running.select(".msg") \
        else channel.until_done()[0].turn_id
    assert other.get(f"/c/{session_id}/events?turn={turn_id}&after=0").status_code == 404
    with other.stream("GET", f"/c/{session_id}/events", headers={"Last-Event-ID": f"{turn_id}:0"}) as response:
        assert response.status_code == 404


def test_every_page_open_on_a_conversation_shows_its_turns(browser_client: httpx.Client, channels: Any) -> None:
    """Two tabs on one conversation: a send from one streams live in both."""
    session_id, page = open_home(browser_client)
    first_url, first_id = page_channel(page)
    second_url, _ = page_channel(soup(browser_client.get(f"/c/{session_id}")))
    first, second = channels(browser_client, first_url), channels(browser_client, second_url)
    text = unique("two tabs")
    post(browser_client, session_id, text, first_id)
    one, two = first.until_done(), second.until_done()
    assert one[0].event == two[0].event == "turn"
    assert streamed_text(one) == streamed_text(two) == reply_to(text, 1)


def test_a_channel_resumes_after_its_last_event_without_repeating(browser_client: httpx.Client, channels: Any) -> None:
    session_id, page = open_home(browser_client)
    url, channel_id = page_channel(page)
    channel = channels(browser_client, url)
    post(browser_client, session_id, f"{unique('resume')} {SLOW}", channel_id)
    events = channel.until_done()
    chunks = [e for e in events if e.event == "chunk"]
    assert len(chunks) > 3
    middle = chunks[len(chunks) // 2]
    again = channels(browser_client, url, {"Last-Event-ID": middle.id})  # the browser's own reconnect
    rest = again.until_done()
    assert rest[0].event == "chunk" and rest[0].seq > middle.seq
    seen = streamed_text(chunks[: len(chunks) // 2 + 1]) + streamed_text(rest)
    assert seen == streamed_text(chunks)
    # reconnecting after the end shows nothing again: the next event is the next turn's
    after_end = channels(browser_client, url, {"Last-Event-ID": events[-1].id})
    post(browser_client, session_id, unique("next"), channel_id)
    assert after_end.next().event == "turn"


def test_a_channel_that_missed_a_turn_shows_the_list_again(browser_client: httpx.Client, channels: Any) -> None:
    """A page whose stream was away while a whole turn went by (its place names an older turn) gets the
    message list as it is now (`sync`), then the next turns live."""
    session_id, page = open_home(browser_client)
    url, channel_id = page_channel(page)
    channel = channels(browser_client, url)
    seen = post(browser_client, session_id, unique("seen"), channel_id)
    assert seen.status_code == 200
    last_seen = channel.until_done()[-1].id
    channel.close()
    missed = unique("missed")
    follow = soup(post(browser_client, session_id, missed))  # (from another tab, with no channel here)
    with browser_client.stream("GET", follow.select_one(".msg--streaming")["sse-connect"]) as response:
        assert [e.event for e in iter_sse(response)][-1] == "done"
    back = channels(browser_client, url, {"Last-Event-ID": last_seen})
    sync = back.next()
    assert sync.event == "sync"
    listed = BeautifulSoup(sync.data, "html.parser").select_one('[hx-swap-oob="innerHTML:#message-list"]')
    bodies = [words(body.get_text()) for body in listed.select(".msg .msg__body")]
    assert missed in bodies and words(reply_to(missed, 2)) in bodies
    assert sync.seq > 0  # its id names the newest turn, all of it shown
    post(browser_client, session_id, unique("then"), channel_id)
    assert back.next().event == "turn"


def test_a_regenerate_shows_in_every_open_page(browser_client: httpx.Client, channels: Any) -> None:
    """A regenerate changes bubbles already shown: a page open elsewhere gets the list again, then the
    new reply streaming; the page that asked gets its pane, whose channel follows the new reply."""
    session_id, page = open_home(browser_client)
    url, channel_id = page_channel(page)
    other_tab = channels(browser_client, url)
    post(browser_client, session_id, unique("first"), channel_id)
    other_tab.until_done()
    pane = soup(browser_client.post(f"/c/{session_id}/regenerate", data={"request_id": unique("r")},
                                    headers={**HX, **EN}))
    pane_url, _ = page_channel(pane)
    streaming = pane.select_one("article.msg--streaming")
    assert "turn=" + streaming["id"].removeprefix("turn-") in pane_url and not streaming.has_attr("sse-connect")
    asked = channels(browser_client, pane_url).until_done()
    elsewhere = other_tab.until_done()
    assert elsewhere[0].event == "sync"
    assert BeautifulSoup(elsewhere[0].data, "html.parser").select_one(".msg--streaming")
    done_here, done_there = (BeautifulSoup(events[-1].data, "html.parser") for events in (asked, elsewhere))
    assert done_here.select_one(".versions") and done_there.select_one(".versions")



@pytest.fixture(scope="module")
def two_streams_app(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = _start_app(tmp_path_factory.mktemp("app"), {
        "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_MODEL": "fake-model", "MAX_STREAMS_PER_USER": "2",
    })
    yield app
    _stop_app(app)


def test_a_pages_channel_counts_as_one_stream_while_it_is_open(two_streams_app: AppServer, channels: Any) -> None:
    """MAX_STREAMS_PER_USER counts a page's channel for as long as it is open, idle or following a
    turn (once, not twice), and gives the slot back when it closes."""
    client = httpx.Client(base_url=two_streams_app.base_url, timeout=30, headers=EN)
    client.event_hooks["request"].append(with_page_token(client))  # (a page's CSRF token on its posts)
    try:
        session_id, page = open_home(client)
        url, channel_id = page_channel(page)
        first, _ = channels(client, url), channels(client, url)
        assert client.get(url).status_code == 429  # two idle channels: no third stream
        # a turn followed on a channel takes no second slot: its reply still ends
        answer = post(client, session_id, unique("slot"), channel_id)
        assert not soup(answer).select(".msg")
        assert first.until_done()[-1].event == "done"
        first.close()
        wait_until(lambda: client.get(f"/c/{session_id}/turns/{'0' * 8}-0000-4000-8000-{'0' * 12}/events")
                   .status_code == 200)
    finally:
        client.close()


def test_a_repeated_post_starts_one_turn_and_the_channel_shows_it_once(
    browser_client: httpx.Client, channels: Any,
) -> None:
    """A double click (the same request id twice): one turn; the repeat answers 204 and the channel
    brings the turn once."""
    session_id, page = open_home(browser_client)
    url, channel_id = page_channel(page)
    channel = channels(browser_client, url)
    request_id = unique("rid")
    first = post(browser_client, session_id, unique("twice"), channel_id, request_id=request_id)
    repeat = browser_client.post(f"/c/{session_id}/messages", headers={**HX, **EN}, data={
        "message": "whatever", "channel": channel_id, "request_id": request_id})
    assert repeat.status_code == 204
    events = channel.until_done()
    assert [e.event for e in events].count("turn") == 1 and events[0].turn_id == first.headers["x-turn-id"]
    follow_up = unique("next")
    post(browser_client, session_id, follow_up, channel_id)
    nxt = channel.next()
    assert nxt.event == "turn" and follow_up in nxt.data  # the next event is the next turn's, nothing between
    history = browser_client.get("/chat/history", params={"session_id": session_id}).json()["messages"]
    assert [m["role"] for m in history].count("user") == 2


@pytest.mark.parametrize("query, headers, status", [
    ("channel=%3Cscript%3E", {}, 422),  # a channel id is letters, digits, - and _
    ("channel=" + "a" * 65, {}, 422),
    ("turn=" + "t" * 65, {}, 422),
    ("after=-1", {}, 422),
    ("after=99999999999", {}, 422),
])
def test_hostile_channel_parameters_are_refused(browser_client: httpx.Client, query: str, headers: dict[str, str],
                                               status: int) -> None:
    session_id, _ = open_home(browser_client)
    assert browser_client.get(f"/c/{session_id}/events?{query}", headers=headers).status_code == status


def test_a_hostile_last_event_id_or_turn_shows_the_list_not_an_error(browser_client: httpx.Client,
                                                                     channels: Any) -> None:
    """Last-Event-ID and `turn` are only compared with the conversation's own turn ids: anything else
    is a page that shows an unknown turn, which gets the list as it is (there is one turn here)."""
    session_id, page = open_home(browser_client)
    url, channel_id = page_channel(page)
    post(browser_client, session_id, unique("one"), channel_id)  # (no channel open: its own stream)
    for headers in ({"Last-Event-ID": "<script>alert(1)</script>:5"}, {"Last-Event-ID": "\u202e:x".encode()}):
        sync = channels(browser_client, url, headers).next()
        assert sync.event == "sync" and "<script>alert" not in sync.data
    sync = channels(browser_client, f"/c/{session_id}/events?turn=%3Cb%3E&after=3").next()
    assert sync.event == "sync" and "<b>" not in sync.data
