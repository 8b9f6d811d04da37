"""Pages and HTMX partials over real HTTP, read with BeautifulSoup: structure, escaping, ids."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
from bs4 import BeautifulSoup

from tests.conftest import SYSTEM_PROMPTS, create_session, iter_sse, page_token, unique, wait_until
from tests.fake_upstream import expected_reply
from tests.ui_fixtures import add_message
from webapp.core.titles import make_preview

HX = {"HX-Request": "true"}
EN = {"Accept-Language": "en-US,en;q=0.9"}
XSS = "<script>alert('x')</script>"


def on_page(session_id: str) -> dict[str, str]:
    """Headers of an HTMX request made from the page of `session_id`."""
    return {**HX, "HX-Current-URL": f"http://testserver/c/{session_id}"}


def soup(response: httpx.Response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def open_home(client: httpx.Client) -> tuple[str, BeautifulSoup]:
    """A new user opens / (an empty chat, stored nowhere) and starts a conversation of their own."""
    assert client.get("/").status_code == 200
    response = client.post("/c", follow_redirects=True)
    assert response.status_code == 200
    assert response.history and response.history[0].status_code == 303
    return response.url.path.rsplit("/", 1)[1], soup(response)


def ids_are_unique(page: BeautifulSoup) -> None:
    counts = Counter(tag["id"] for tag in page.find_all(id=True))
    assert [i for i, n in counts.items() if n > 1] == []


def send_hx(client: httpx.Client, session_id: str, text: str, search: str | None = None) -> httpx.Response:
    data = {"message": text} if search is None else {"message": text, "q": search}  # q: the composer's hx-include
    response = client.post(f"/c/{session_id}/messages", data=data, headers={**HX, **EN})
    assert response.status_code == 200, response.text
    return response


def follow_html_stream(client: httpx.Client, url: str, headers: dict[str, str] | None = None,
                       until_done: bool = False) -> list[Any]:
    """The events of a stream to its end (`until_done`: to the first `done`; a page's channel goes on)."""
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for event in iter_sse(response):
            events.append(event)
            if until_done and event.event == "done":
                break
        return events


@pytest.fixture
def browser_client(make_client: Callable[..., httpx.Client]) -> httpx.Client:
    return make_client(headers=EN)


# full page vs partial -------------------------------------------------------------------

def test_full_page_for_a_normal_request_and_the_fragment_for_htmx(browser_client: httpx.Client) -> None:
    session_id, page = open_home(browser_client)
    assert page.html["lang"] == "en"
    assert page.find("nav", id="sidebar") and page.find("main", id="main")
    assert page.find("main", id="main")["data-conversation"] == session_id
    scripts = [tag["src"] for tag in page.find_all("script")]
    assert scripts[0].startswith("/static/vendor/htmx-2.") and scripts[1].startswith("/static/vendor/sse-2.")
    assert all(src.startswith("/static/") for src in scripts)  # no CDN
    assert all(link["href"].startswith("/static/") for link in page.find_all("link", href=True))
    ids_are_unique(page)

    fragment = browser_client.get(f"/c/{session_id}", headers=HX)
    assert fragment.status_code == 200 and fragment.headers["vary"] == "HX-Request"
    partial = soup(fragment)
    assert partial.find("html") is None and partial.find("nav") is None
    assert [tag.name for tag in partial.find_all(recursive=False)] == ["title", "main"]
    main = partial.find("main", id="main")
    assert main.find(id="message-list") and main.find("form", id="composer")
    assert main.find(id="role-selector")
    # a history restore asks for the whole page again
    restore = soup(browser_client.get(f"/c/{session_id}", headers={**HX, "HX-History-Restore-Request": "true"}))
    assert restore.find("nav", id="sidebar")


def test_landmarks_labels_and_live_region(browser_client: httpx.Client) -> None:
    session_id, page = open_home(browser_client)
    assert page.find("nav")["aria-label"] and page.find("main")["aria-labelledby"] == f"title-{session_id}"
    textarea = page.find("textarea", id="composer-input")
    assert page.find("label", attrs={"for": "composer-input"}).get_text(strip=True) == "Message"
    assert textarea.has_attr("autofocus") and textarea["name"] == "message"
    assert page.find("label", attrs={"for": "search"})
    assert page.find(id="toasts")["aria-live"] == "polite"
    assert page.find("dialog", id="help") and page.find("dialog", id="confirm")
    for button in page.find_all("button"):
        assert button.get_text(strip=True) or button.get("aria-label"), button


# sending and streaming -------------------------------------------------------------------

def test_send_returns_user_bubble_and_a_streaming_bubble_wired_to_sse(browser_client: httpx.Client) -> None:
    session_id, _ = open_home(browser_client)
    text = f"{unique('send')} {XSS}"
    response = send_hx(browser_client, session_id, text, search="")
    assert "hx-trigger" not in response.headers  # the sidebar's item comes out of band, no refresh of the list
    fragment = soup(response)
    user = fragment.select_one("article.msg--user")
    assert user["id"].startswith("msg-m_")
    assert user.select_one(".msg__body").get_text() == text
    assert "<script>" not in response.text and "&lt;script&gt;" in response.text

    streaming = fragment.select_one("article.msg--streaming")
    turn_id = streaming["id"].removeprefix("turn-")
    assert streaming["hx-ext"] == "sse"
    assert streaming["sse-connect"] == f"/c/{session_id}/turns/{turn_id}/events?after=0"
    assert streaming["sse-swap"] == "done" and streaming["sse-close"] == "done"
    assert streaming["hx-swap"] == "outerHTML"
    body = streaming.select_one(".msg__stream")
    assert body["sse-swap"] == "chunk" and body["hx-swap"] == "beforeend" and body["aria-live"] == "polite"
    assert streaming.select_one(".typing")  # until the first chunk
    # out-of-band: the composer shows Stop, the header the new title, and the suggestions go
    actions = fragment.find(id="composer-actions")
    assert actions["hx-swap-oob"] == "true"
    assert actions.select_one(".round-btn--stop")["hx-post"] == f"/c/{session_id}/stop"
    assert fragment.find(id=f"title-{session_id}").get_text(strip=True).startswith("send-")
    assert fragment.find(id="suggestions")["hx-swap-oob"] == "delete"
    # ...and the sidebar's item moves to the top: the old one deleted, the new one (running) put first
    gone, moved = fragment.find_all(id=f"conv-{session_id}")
    assert gone["hx-swap-oob"] == "delete" and not gone.contents
    assert moved.parent.name == "ul" and moved.parent["hx-swap-oob"] == "afterbegin:#session-list"
    assert "hx-swap-oob" not in moved.attrs and "is-active" in moved["class"]
    assert moved.select_one(".session__title").get_text() == fragment.find(id=f"title-{session_id}").get_text()
    assert moved.select_one(".session__running") and moved.select_one(".session__preview").get_text().startswith("send-")

    events = follow_html_stream(browser_client, streaming["sse-connect"])
    assert [e.event for e in events[:-1]] == ["chunk"] * (len(events) - 1) and events[-1].event == "done"
    assert all(e.id and e.id.startswith(f"{turn_id}:") for e in events)
    streamed = "".join(e.data for e in events[:-1])
    assert "&lt;script&gt;" in streamed and "<script" not in streamed  # chunks are escaped text
    done = BeautifulSoup(events[-1].data, "html.parser")
    final = done.select_one("article.msg--assistant")
    assert final["id"].startswith("msg-m_") and "msg--streaming" not in final["class"]
    expected = expected_reply(2, SYSTEM_PROMPTS["assistant"], text, 12)
    assert " ".join(final.select_one(".msg__body").get_text().split()) == " ".join(expected.split())
    assert done.find(id="composer-actions")["hx-swap-oob"] == "true"
    assert done.select_one("#composer-actions .round-btn--send")
    item = done.find(id=f"conv-{session_id}")  # the sidebar's item, replaced in place: the reply's preview
    assert item["hx-swap-oob"] == "true" and "is-active" in item["class"] and not item.select_one(".session__running")
    assert item.select_one(".session__preview").get_text() == make_preview(expected)
    sidebar = soup(browser_client.get("/sidebar", headers={**HX, **EN})).find(id=f"conv-{session_id}")
    for part in (".session__title", ".session__preview", ".session__time"):  # what a refresh would have shown
        assert item.select_one(part).get_text() == sidebar.select_one(part).get_text()


def test_done_of_a_reply_followed_live_shows_what_a_later_read_shows(browser_client: httpx.Client) -> None:
    """A reader following a reply on the writer's worker renders its final bubble from the saved reply in
    memory (no read); a reader after the turn ended reads it back from Redis. Both show the same thing."""
    session_id, _ = open_home(browser_client)
    for kind in ("send", "regenerate"):  # a regenerate starts a version: its arrows are read, not assumed
        if kind == "send":
            # (slow enough that the stream joins while the reply is written: followed from memory)
            fragment = soup(send_hx(browser_client, session_id, f"{unique('live')} [[tokens:20]] [[delay:20]]"))
        else:
            fragment = soup(browser_client.post(f"/c/{session_id}/regenerate", data={"request_id": unique("r")},
                                                headers={**HX, **EN}))
        # (a send with no channel named streams on its own; a regenerate's pane follows it on the page's channel)
        streaming = fragment.select_one("article.msg--streaming")
        url = streaming.get("sse-connect") or fragment.select_one(".chat__inner")["sse-connect"]
        live = BeautifulSoup(follow_html_stream(browser_client, url, until_done=True)[-1].data, "html.parser")
        turn_id = streaming["id"].removeprefix("turn-")
        later_url = f"/c/{session_id}/turns/{turn_id}/events?after=0"
        later = BeautifulSoup(follow_html_stream(browser_client, later_url)[-1].data, "html.parser")
        for done in (live, later):  # (the Regenerate form's request id is new per render)
            for field in done.select("input[name=request_id]"):
                field["value"] = ""
        assert str(live.select_one("article.msg--assistant")) == str(later.select_one("article.msg--assistant"))
        assert bool(live.select_one(".versions")) == (kind == "regenerate")
        # (on a channel the item comes as a template app.js puts in place: test_channels.py; its text is
        # a template's, which get_text() leaves out, so it is read as HTML of its own)
        update = live.select_one("template.session-update")
        item_live = (BeautifulSoup(update.decode_contents(), "html.parser") if update else live).find(
            id=f"conv-{session_id}")
        item_later = later.find(id=f"conv-{session_id}")
        for part in (".session__title", ".session__preview", ".session__time"):
            assert item_live.select_one(part).get_text() == item_later.select_one(part).get_text()
        assert not item_live.select_one(".session__running") and not item_later.select_one(".session__running")


def test_send_while_the_sidebar_shows_search_results_refreshes_the_list(browser_client: httpx.Client) -> None:
    """The conversation may not belong in the results: the list is asked for again, no item is moved."""
    session_id, _ = open_home(browser_client)
    response = send_hx(browser_client, session_id, unique("searching"), search="kubernetes")
    assert response.headers["hx-trigger"] == "sessions-changed"
    fragment = soup(response)
    assert not fragment.find_all(id=f"conv-{session_id}")
    streaming = fragment.select_one("article.msg--streaming")
    assert streaming["sse-connect"].endswith("?after=0&searching=1")
    events = follow_html_stream(browser_client, streaming["sse-connect"])
    done = BeautifulSoup(events[-1].data, "html.parser")
    assert done.select_one("article.msg--assistant") and not done.find(id=f"conv-{session_id}")


def test_stream_resumes_after_the_last_event_without_repeating(browser_client: httpx.Client) -> None:
    session_id, _ = open_home(browser_client)
    text = f"{unique('resume')} [[tokens:30]] [[delay:20]]"
    url = soup(send_hx(browser_client, session_id, text)).select_one(".msg--streaming")["sse-connect"]
    events = follow_html_stream(browser_client, url)
    chunks = [e for e in events if e.event == "chunk"]
    middle = chunks[len(chunks) // 2]
    rest = follow_html_stream(browser_client, url, headers={"Last-Event-ID": middle.id})
    seen = "".join(e.data for e in chunks[: len(chunks) // 2 + 1]) + "".join(e.data for e in rest if e.event == "chunk")
    assert seen == "".join(e.data for e in chunks)
    assert rest[-1].event == "done"


def test_page_of_a_running_reply_shows_its_text_and_refreshes_only_without_js(browser_client: httpx.Client) -> None:
    session_id, _ = open_home(browser_client)
    send_hx(browser_client, session_id, f"{unique('running')} [[tokens:80]] [[delay:30]]")

    def partly_written() -> BeautifulSoup | None:
        page = soup(browser_client.get(f"/c/{session_id}"))
        stream = page.select_one(".msg--streaming .msg__stream")
        return page if stream is not None and len(stream.get_text()) > 10 else None

    page = wait_until(partly_written, timeout=10)
    streaming = page.select_one(".msg--streaming")
    channel = page.select_one(".chat__inner")["sse-connect"]  # the page's channel follows the reply
    assert f"turn={streaming['id'].removeprefix('turn-')}&" in channel and not streaming.has_attr("sse-connect")
    after = int(channel.rsplit("after=", 1)[1])
    assert after > 0  # it picks up after what the page already shows
    refresh = page.find("meta", attrs={"http-equiv": "refresh"})
    assert refresh is not None and refresh.parent.name == "noscript"
    assert page.select_one("#composer-actions .round-btn--stop")
    # the stop form works without JS too
    stop = browser_client.post(f"/c/{session_id}/stop")
    assert stop.status_code == 303 and stop.headers["location"] == f"/c/{session_id}"
    page = wait_until(lambda: (p := soup(browser_client.get(f"/c/{session_id}"))).select_one(".msg--interrupted") and p)
    assert page.find("meta", attrs={"http-equiv": "refresh"}) is None
    assert page.select_one("#composer-actions .round-btn--send")


def test_plain_form_post_redirects_and_errors_keep_the_text(browser_client: httpx.Client) -> None:
    session_id, _ = open_home(browser_client)
    response = browser_client.post(f"/c/{session_id}/messages", data={"message": "line one\r\nline two"})
    assert response.status_code == 303 and response.headers["location"] == f"/c/{session_id}"
    too_long = "长" * 1001
    response = browser_client.post(f"/c/{session_id}/messages", data={"message": too_long})
    assert response.status_code == 400
    page = soup(response)
    assert "1000" in page.select_one(".composer__error").get_text()
    assert page.find("textarea", id="composer-input").get_text() == too_long
    # HTMX gets a toast, retargeted, and the composer keeps its text (nothing is swapped into it)
    response = browser_client.post(f"/c/{session_id}/messages", data={"message": "   "}, headers=HX)
    assert response.status_code == 400
    assert response.headers["hx-retarget"] == "#toasts" and response.headers["hx-reswap"] == "beforeend"
    assert soup(response).select_one(".toast--error").get_text(strip=True) == "The message cannot be empty"


# markdown and escaping --------------------------------------------------------------------

def test_assistant_markdown_is_rendered_and_sanitized(browser_client: httpx.Client, redis_client: redis.Redis) -> None:
    session_id, _ = open_home(browser_client)
    add_message(redis_client, session_id, "user", "show me **markdown** " + XSS)
    add_message(redis_client, session_id, "assistant", (
        "# Title\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```python\nprint('<hi>')\n```\n\n[site](https://example.com) [bad](javascript:alert(1)) "
        "![img](https://tracker.example/p.png)\n\n" + XSS + ' <img src=x onerror="alert(1)">'
    ))
    page = soup(browser_client.get(f"/c/{session_id}"))
    user, reply = page.select("article.msg--user")[-1], page.select("article.msg--assistant")[-1]
    assert user.select_one(".msg__body").get_text() == "show me **markdown** " + XSS  # user text never rendered
    assert user.find("strong") is None and user.find("script") is None
    prose = reply.select_one(".prose")
    assert prose.find("h1").get_text() == "Title" and len(prose.select("ul > li")) == 2
    assert prose.select_one(".table-wrap > table th").get_text() == "a"
    code = prose.select_one(".code")
    assert code.select_one(".code__lang").get_text() == "python"
    assert code.select_one("button.code__copy[data-copy]")
    assert code.select_one("pre code").get_text() == "print('<hi>')\n"
    assert code.select_one("pre code span")  # Pygments tokens
    link = prose.find("a", string="site")
    assert link["href"] == "https://example.com" and link["target"] == "_blank"
    assert set(link["rel"]) == {"noopener", "noreferrer", "nofollow"}
    assert all(not (a.get("href") or "").startswith("javascript:") for a in prose.find_all("a"))
    assert prose.find("img") is None and prose.find("script") is None
    assert not any(attr.startswith("on") for tag in prose.find_all(True) for attr in tag.attrs)
    assert XSS in prose.get_text()  # shown as text


def test_titles_are_escaped_everywhere(browser_client: httpx.Client) -> None:
    session_id, _ = open_home(browser_client)
    response = browser_client.post(f"/c/{session_id}/title", data={"title": XSS}, headers=on_page(session_id))
    assert response.status_code == 200
    assert "<script>" not in response.text
    fragment = soup(response)
    assert fragment.select_one(f"#conv-{session_id} .session__title").get_text() == XSS
    assert fragment.find(id=f"title-{session_id}")["hx-swap-oob"] == "true"  # the open header follows
    page_html = browser_client.get(f"/c/{session_id}").text
    assert "<script>alert" not in page_html
    page = BeautifulSoup(page_html, "html.parser")
    assert page.title.get_text().startswith(XSS)
    assert page.find(id=f"title-{session_id}").get_text() == XSS
    assert f"Delete “{XSS}”?" in page.select_one(f"#conv-{session_id} form[hx-confirm]")["hx-confirm"]


# sidebar -----------------------------------------------------------------------------------

def test_sidebar_is_newest_first_and_paginates(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client(headers=EN)
    created = [create_session(client)["id"] for _ in range(33)]
    for session_id in created[:3]:  # activity moves a conversation to the top
        client.post(f"/c/{session_id}/messages", data={"message": f"hello {session_id[:8]}"})
        time.sleep(0.01)
    wait_until(lambda: not any(s["running_turn_id"] for s in client.get("/api/sessions").json()["items"]))
    first = soup(client.get("/sidebar", headers=HX))
    items = first.select("ul#session-list > li.session")
    assert len(items) == 30
    assert [li["id"] for li in items[:3]] == [f"conv-{sid}" for sid in reversed(created[:3])]
    more = first.select_one("li.sessions__more")
    assert more["hx-trigger"] == "intersect once" and "cursor=" in more["hx-get"]
    assert more.find("a")["href"].startswith("/")  # without JS it is a link
    rest = soup(client.get(more["hx-get"], headers=HX))
    assert rest.find("ul") is None  # the next page is just more items for the same list
    later = rest.select("li.session")
    assert len(later) == 3 and rest.select_one("li.sessions__more") is None
    every = [li["id"] for li in items + later]
    assert len(set(every)) == 33
    item = items[0]
    assert item.select_one("a.session__link")["hx-push-url"] == "true"
    assert item.select_one(".session__time").get_text() == "just now"
    assert item.select_one(".session__title").get_text() == f"hello {created[2][:8]}"


def test_search_finds_titles_and_message_text(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client(headers=EN)
    marker = unique("needle")
    with_text = create_session(client)["id"]
    client.post(f"/c/{with_text}/messages", data={"message": f"something about {marker} here"})
    titled = create_session(client)["id"]
    client.post(f"/c/{titled}/title", data={"title": f"Title {marker.upper()}"})
    create_session(client)
    found = soup(client.get("/sidebar", params={"q": marker}, headers=HX))
    assert {li["id"] for li in found.select("li.session")} == {f"conv-{with_text}", f"conv-{titled}"}
    assert found.select_one("li.sessions__more") is None
    nothing = soup(client.get("/sidebar", params={"q": "zzz-" + marker}, headers=HX))
    assert nothing.select_one(".sessions__empty").get_text(strip=True).startswith("No conversations match")
    # without JS the search is a GET of the page itself
    page = soup(client.get(f"/c/{titled}", params={"q": marker}))
    assert len(page.select("#session-list li.session")) == 2 and page.find("input", id="search")["value"] == marker


def test_rename_inline_and_delete_with_undo(browser_client: httpx.Client) -> None:
    session_id, _ = open_home(browser_client)
    edit = soup(browser_client.get(f"/c/{session_id}/title/edit", headers=HX))
    field = edit.select_one(f"li#conv-{session_id} form.rename input[name=title]")
    assert field.has_attr("autofocus") and field["hx-trigger"] == "cancel-rename"  # app.js fires it on Escape
    empty = browser_client.post(f"/c/{session_id}/title", data={"title": "  "}, headers=HX)
    assert empty.status_code == 400 and "title cannot be empty" in empty.text
    browser_client.post(f"/c/{session_id}/title", data={"title": "  Kept   title "})
    assert browser_client.get(f"/api/sessions/{session_id}").json()["title"] == "Kept title"

    deleted = browser_client.post(f"/c/{session_id}/delete", headers=on_page(session_id))
    assert deleted.status_code == 200
    fragment = soup(deleted)
    toast = fragment.find(attrs={"hx-swap-oob": "beforeend:#toasts"}).select_one(".toast")
    assert "Deleted “Kept title”" in toast.get_text()
    undo = toast.select_one("form")["hx-post"]
    assert undo == f"/c/{session_id}/restore"
    # the open conversation was deleted: another one opens, out of band, with its URL pushed
    following = fragment.find("main", id="main")
    assert following["hx-swap-oob"] == "true" and following["data-conversation"] != session_id
    assert deleted.headers["hx-push-url"] == f"/c/{following['data-conversation']}"
    assert following.select_one("#composer-actions")  # not itself out of band
    assert not following.select("[hx-swap-oob]")
    assert browser_client.get(f"/api/sessions/{session_id}").status_code == 404

    restored = browser_client.post(undo, headers=HX)
    assert restored.status_code == 200 and restored.headers["hx-trigger"] == "sessions-changed"
    assert "Restored" in restored.text
    assert browser_client.get(f"/api/sessions/{session_id}").json()["title"] == "Kept title"
    again = browser_client.post(undo, headers=HX)
    assert again.status_code == 410 and again.headers["hx-retarget"] == "#toasts"


def test_rename_and_delete_work_without_javascript(browser_client: httpx.Client) -> None:
    first, _ = open_home(browser_client)
    browser_client.post(f"/c/{first}/messages", data={"message": "keep me"})
    second = browser_client.post("/c").headers["location"].rsplit("/", 1)[1]
    page = soup(browser_client.get(f"/c/{first}/title/edit"))  # the page, with that item as a form
    form = page.select_one(f"#session-list li#conv-{first} form.rename")
    assert form["method"] == "post" and form["action"] == f"/c/{first}/title"
    renamed = browser_client.post(form["action"], data={"title": "Renamed without JS"})
    assert renamed.status_code == 303 and renamed.headers["location"] == f"/c/{first}"

    deleted = browser_client.post(f"/c/{first}/delete", headers={"Referer": f"http://testserver/c/{second}"})
    assert deleted.status_code == 303 and deleted.headers["location"] == f"/c/{second}?deleted={first}"
    page = soup(browser_client.get(deleted.headers["location"]))
    toast = page.select_one("#toasts .toast")
    assert "Conversation deleted" in toast.get_text()
    undo = toast.select_one("form")
    assert undo["method"] == "post" and undo["action"] == f"/c/{first}/restore"
    restored = browser_client.post(undo["action"])
    assert restored.status_code == 303 and restored.headers["location"] == f"/c/{first}"
    assert soup(browser_client.get(f"/c/{first}")).find(id=f"title-{first}").get_text() == "Renamed without JS"


def test_others_cannot_touch_a_conversation(make_client: Callable[..., httpx.Client]) -> None:
    owner, stranger = make_client(headers=EN), make_client(headers=EN)
    session_id, _ = open_home(owner)
    page = stranger.get(f"/c/{session_id}")
    assert page.status_code == 404
    assert soup(page).select_one(".error-card h1").get_text() == "Something went wrong"
    assert "Conversation not found" in page.text
    form = {"title": "x", "role": "teacher", "message": "x"}
    for path in ("delete", "title", "role", "messages", "stop"):
        assert stranger.post(f"/c/{session_id}/{path}", data=form).status_code == 404
    owner.post(f"/c/{session_id}/delete")
    assert stranger.post(f"/c/{session_id}/restore").status_code == 410
    assert stranger.get("/c/not-an-id").status_code == 400


# roles, language, history -------------------------------------------------------------------

def test_role_selector_lists_three_roles_and_switches(browser_client: httpx.Client) -> None:
    session_id, page = open_home(browser_client)
    options = page.select("#role-selector button.role-option")
    assert [b["value"] for b in options] == ["assistant", "teacher", "programmer"]
    assert [b["aria-pressed"] for b in options] == ["true", "false", "false"]
    assert "AI老师" in options[1].get_text() and "AI Teacher" in options[1].get_text()
    assert options[2].select_one(".role-option__desc").get_text() == "Expert programming advice and solutions"
    fragment = soup(browser_client.post(f"/c/{session_id}/role", data={"role": "programmer"}, headers=HX))
    assert fragment.select_one("#role-selector #role-programmer")["aria-pressed"] == "true"
    assert browser_client.get(f"/api/sessions/{session_id}").json()["role"] == "programmer"
    bad = browser_client.post(f"/c/{session_id}/role", data={"role": "pirate"}, headers=HX)
    assert bad.status_code == 400 and "Unsupported AI role" in bad.text


def test_language_from_accept_language_and_a_remembered_switch(make_client: Callable[..., httpx.Client]) -> None:
    client = make_client(headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    session_id, page = open_home(client)
    assert page.html["lang"] == "zh-CN" and page.select_one(".btn--new").get_text(strip=True).startswith("新对话")
    switch = client.post("/lang", data={"lang": "en", "next": f"/c/{session_id}"})
    assert switch.status_code == 303 and switch.headers["location"] == f"/c/{session_id}"
    assert "lang=en" in switch.headers["set-cookie"]
    page = soup(client.get(f"/c/{session_id}"))
    assert page.html["lang"] == "en" and page.select_one(".btn--new").get_text(strip=True).startswith("New chat")
    # the welcome stored in Chinese reads in English for an English reader
    assert "How can I help you?" in page.select_one("#message-list .msg--assistant .msg__body").get_text()
    assert client.post("/lang", data={"lang": "zh", "next": "//evil.example"}).headers["location"] == "/"


def test_long_history_loads_latest_page_first_then_older(
    browser_client: httpx.Client, redis_client: redis.Redis
) -> None:
    session_id, _ = open_home(browser_client)
    for n in range(1, 46):
        add_message(redis_client, session_id, "user" if n % 2 else "assistant", f"message {n}")
    page = soup(browser_client.get(f"/c/{session_id}"))
    bodies = [b.get_text(strip=True) for b in page.select("#message-list article .msg__body")]
    assert len(bodies) == 30 and bodies[-1] == "message 45" and bodies[0] == "message 16"
    older = page.select_one("#message-list > .older")
    assert older["hx-trigger"] == "intersect once" and older["hx-swap"] == "outerHTML"
    assert older.find("a")["href"] == f"/c/{session_id}?before=16"
    fragment = soup(browser_client.get(older["hx-get"], headers=HX))
    bodies = [b.get_text(strip=True) for b in fragment.select("article .msg__body")]
    assert len(bodies) == 16 and bodies[-1] == "message 15" and fragment.select_one(".older") is None
    ids_are_unique(page)


def test_error_reply_and_unanswered_message_offer_retry(browser_client: httpx.Client) -> None:
    session_id, _ = open_home(browser_client)
    text = f"{unique('fail')} [[fail:500]]"
    url = soup(send_hx(browser_client, session_id, text)).select_one(".msg--streaming")["sse-connect"]
    done = BeautifulSoup(follow_html_stream(browser_client, url)[-1].data, "html.parser")
    bubble = done.select_one("article.msg--error")
    assert "The AI service is unavailable" in bubble.select_one(".msg__error").get_text()
    # Retry answers the same message again (it is never sent, nor stored, twice)
    assert bubble.select_one("form.retry")["hx-post"] == f"/c/{session_id}/regenerate"
    assert bubble.select_one("form.retry input[name=message]") is None
    assert bubble.select_one("form.retry input[name=request_id]")["value"]
    page = soup(browser_client.get(f"/c/{session_id}"))  # after a reload the Retry is still there
    retry = page.select_one("#message-list form.retry")
    assert retry["action"] == f"/c/{session_id}/regenerate"
    again = browser_client.post(retry["action"], data={"request_id": retry.select_one("input[name=request_id]")["value"]})
    assert again.status_code == 303
    users = [m for m in browser_client.get(f"/api/sessions/{session_id}/messages").json()["items"] if m["role"] == "user"]
    assert [m["content"] for m in users] == [text]


def test_the_composers_form_is_checked_like_form_fields_and_its_token_may_come_in_the_form(
    make_client: Callable[..., httpx.Client],
) -> None:
    """The composer's posts read their form by hand (webapp/forms.py): the same limits as `Form()`
    fields (an HTML 422, nothing stored), the last of a repeated field, and, without JavaScript, the
    CSRF token as a form field instead of the header."""
    client = make_client(page_token=False)
    assert client.get("/").status_code == 200
    token = page_token(client)
    opened = client.post("/c", headers={"X-CSRF-Token": token}, follow_redirects=True)
    session_id = opened.url.path.rsplit("/", 1)[1]
    headers = {**HX, "X-CSRF-Token": token}
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    for fields in ([("message", "hi"), ("request_id", "r" * 101)], [("message", "hi"), ("q", "q" * 201)],
                   [("message", "hi")] + [("f", "x")] * 1001):
        response = client.post(f"/c/{session_id}/messages", content=urlencode(fields), headers=form)
        assert response.status_code == 422 and response.headers["HX-Retarget"] == "#toasts", response.text
        first = client.post("/c/new/messages", content=urlencode(fields), headers=form)
        assert first.status_code == 422
    assert client.get("/chat/history", params={"session_id": session_id}).json()["messages"][1:] == []
    text = unique("twice")
    response = client.post(f"/c/{session_id}/messages", headers=form,
                           content=urlencode([("message", "not this"), ("message", text)]))
    assert response.status_code == 200 and text in response.text and "not this" not in response.text
    follow_html_stream(client, soup(response).select_one("article.msg--streaming")["sse-connect"])
    # without JavaScript: a plain form post carrying the token as a field, answered with a 303
    no_js = client.post(f"/c/{session_id}/messages", data={"message": unique("nojs"), "csrf_token": token})
    assert no_js.status_code == 303
    refused = client.post(f"/c/{session_id}/messages", data={"message": unique("nojs"), "csrf_token": "0" * 32})
    assert refused.status_code == 403
