"""Attachments over HTTP, on two real app hosts sharing one Redis (a vision model configured) and the fake
model: upload on one host, the file served and sent to the model from the other; the composer's multipart
form (no JavaScript); who may read a file (owner, share link; everyone else 404); hostile uploads; CSRF."""

from __future__ import annotations

import base64
import io
from typing import Any, Callable, Iterator

import httpx
import pytest
from PIL import Image

from tests.conftest import (
    AppServer,
    _start_app,
    _stop_app,
    closing_clients,
    create_session,
    page_token,
    read_events,
    unique,
    wait_until,
)
from tests.files import image_bytes, noisy_jpeg, pdf_bytes


@pytest.fixture(scope="module")
def hosts(redis_server: Any, upstream: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AppServer]]:
    settings = {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
                "OPENAI_MODEL": "fake-model", "AUTO_TITLE": "false", "OPENAI_VISION_MODELS": "fake-model",
                "MAX_ATTACHMENT_BYTES": "3000000"}
    apps = [_start_app(tmp_path_factory.mktemp(f"files-host-{n}"), settings) for n in (1, 2)]
    try:
        yield apps
    finally:
        for app in apps:
            _stop_app(app)


@pytest.fixture
def on(hosts: list[AppServer]) -> Iterator[Callable[..., httpx.Client]]:
    """on(host, cookies_of=client): a client on host 0 or 1, the same identity as another client if given."""
    with closing_clients() as new:

        def make(host: int, cookies_of: httpx.Client | None = None, token: bool = True) -> httpx.Client:
            client = new(hosts[host].base_url, token)
            if cookies_of is not None:
                client.cookies = cookies_of.cookies
            return client

        yield make


def upload(client: httpx.Client, *files: tuple[str, bytes, str]) -> httpx.Response:
    return client.post("/api/files", files=[("files", f) for f in files])


def test_a_photo_uploaded_on_one_host_is_served_and_sent_to_the_model_from_the_other(on, upstream) -> None:
    first = on(0)
    session = create_session(first)
    second = on(1, cookies_of=first)
    response = upload(first, ("photo.png", image_bytes(3000, 1000), "image/png"))
    assert response.status_code == 201, response.text
    [photo] = response.json()
    assert (photo["kind"], photo["type"], photo["width"], photo["height"]) == ("image", "image/jpeg", 2048, 683)
    marker = unique("two-hosts")
    posted = second.post(f"/api/sessions/{session['id']}/turns",
                         json={"message": marker, "attachments": [photo["id"]]})
    assert posted.status_code == 202, posted.text
    assert read_events(second, posted.json()["events_url"]).events[-1].type == "end"
    url = upstream.chat_requests(marker)[-1]["last_user_parts"][1]["image_url"]["url"]
    served = first.get(f"/c/{session['id']}/files/{photo['id']}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-disposition"] == "inline; filename=\"photo.jpg\"; filename*=UTF-8''photo.jpg"
    assert url == "data:image/jpeg;base64," + base64.b64encode(served.content).decode()
    assert Image.open(io.BytesIO(served.content)).size == (2048, 683)
    [asked] = [m for m in second.get(f"/api/sessions/{session['id']}/messages").json()["items"]
               if m["content"] == marker]
    assert asked["attachments"][0]["id"] == photo["id"]


def test_a_large_photo_reaches_the_model_whole_in_a_body_of_known_length(on, upstream) -> None:
    """(A body over BODY_SLICE is written in slices, the event loop served between them: still one body with
    its Content-Length, not chunked, which some OpenAI-compatible servers refuse.)"""
    from webapp.llm.body import SLICE as BODY_SLICE

    client = on(0)
    session = create_session(client)
    response = upload(client, ("noise.jpg", noisy_jpeg(1600, 1200), "image/jpeg"))
    assert response.status_code == 201, response.text
    [photo] = response.json()
    marker = unique("large-photo")
    posted = client.post(f"/api/sessions/{session['id']}/turns", json={"message": marker, "attachments": [photo["id"]]})
    assert posted.status_code == 202, posted.text
    assert read_events(client, posted.json()["events_url"]).events[-1].type == "end"
    [request] = upstream.chat_requests(marker)
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert "transfer-encoding" not in headers and int(headers["content-length"]) > 3 * BODY_SLICE
    served = client.get(f"/c/{session['id']}/files/{photo['id']}").content
    assert request["last_user_parts"][1]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(served).decode()


def test_the_no_js_composer_posts_text_and_files_in_one_multipart_form(on, upstream) -> None:
    client = on(0, token=False)  # the token in the form's field, as a browser without JavaScript sends it
    session = create_session(client)
    marker = unique("no-js")
    response = client.post(f"/c/{session['id']}/messages",
                           data={"message": marker, "csrf_token": page_token(client)},
                           files=[("files", ("notes.csv", b"name,size\nwidget,3\n", "text/csv")),
                                  ("files", ("r.pdf", pdf_bytes(["PDF first line"]), "application/pdf"))],
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    page = client.get(f"/c/{session['id']}").text
    assert "notes.csv" in page and "r.pdf" in page
    sent = upstream.chat_requests(marker)
    assert sent and "widget,3" in sent[-1]["last_user_message"] and "PDF first line" in sent[-1]["last_user_message"]


def test_a_refused_file_keeps_the_typed_text_and_stores_nothing(on, redis_client) -> None:
    client = on(0)
    session = create_session(client)
    response = client.post(f"/c/{session['id']}/messages", data={"message": "keep me <b>typed</b>"},
                           files=[("files", ("ok.txt", b"fine", "text/plain")),
                                  ("files", ("cat.png", b"not a png", "image/png"))])
    assert response.status_code == 415
    assert "keep me &lt;b&gt;typed&lt;/b&gt;" in response.text and "cat.png" in response.text
    uid = client.cookies.get("chat_uid").rpartition(".")[0]
    assert not redis_client.exists(f"chat:{{{uid}}}:uploads")


@pytest.mark.parametrize("name, data, status", [
    ("big.txt", b"a" * 3_000_001, 413),
    ("x.svg", b"<svg onload=alert(1)>", 415),
    ("x.png", b"<html><script>alert(1)</script>", 415),
    ("empty.txt", b"", 400),
    ("broken.pdf", b"%PDF-1.7 nonsense", 422),
])
def test_hostile_uploads_get_a_clear_error(on, name: str, data: bytes, status: int) -> None:
    response = upload(on(0), (name, data, "application/octet-stream"))
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    if status == 413:
        assert "3.0 MB" in response.json()["detail"]


def test_too_many_files_and_a_non_multipart_body_are_refused(on) -> None:
    client = on(0)
    assert upload(client, *[(f"{n}.txt", b"x", "text/plain") for n in range(6)]).status_code == 400
    assert client.post("/api/files", json={"files": []}).status_code == 415


def test_files_are_served_only_to_their_owner_and_through_their_own_share_link(on) -> None:
    alice, mallory = on(0), on(1)
    session, other = create_session(alice), create_session(alice)
    [doc] = upload(alice, ("<img src=x onerror=alert(1)>.html", b"<script>alert(1)</script>", "text/html")).json()
    posted = alice.post(f"/api/sessions/{session['id']}/turns", json={"attachments": [doc["id"]]})
    assert read_events(alice, posted.json()["events_url"]).events[-1].type == "end"
    path = f"/c/{session['id']}/files/{doc['id']}"
    served = alice.get(path)
    assert served.headers["content-type"] == "text/plain; charset=utf-8"
    assert served.headers["content-disposition"].startswith("attachment; ")
    assert "filename*=UTF-8''%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.html" in served.headers["content-disposition"]
    assert mallory.get(path).status_code == 404
    assert mallory.get(f"/c/{other['id']}/files/{doc['id']}").status_code == 404
    assert alice.get(f"/c/{other['id']}/files/{doc['id']}").status_code == 404  # not that conversation's
    assert alice.get(f"/c/{session['id']}/files/..%2f..%2fetc").status_code == 404
    token = alice.post(f"/api/sessions/{session['id']}/share").json()["token"]
    other_token = alice.post(f"/api/sessions/{other['id']}/share").json()["token"]
    anyone = on(1, token=False)
    shared_page = anyone.get(f"/s/{token}").text
    assert f'href="/s/{token}/files/{doc["id"]}"' in shared_page and "<img src=x" not in shared_page
    assert anyone.get(f"/s/{token}/files/{doc['id']}").content == b"<script>alert(1)</script>"
    assert anyone.get(f"/s/{other_token}/files/{doc['id']}").status_code == 404
    # the user's upload is not another's to send or discard
    [mine] = upload(alice, ("a.txt", b"alice's", "text/plain")).json()
    mallorys = create_session(mallory)
    refused = mallory.post(f"/api/sessions/{mallorys['id']}/turns", json={"message": "x",
                                                                                  "attachments": [mine["id"]]})
    assert refused.status_code == 404
    assert mallory.delete(f"/api/files/{mine['id']}").status_code == 404
    assert alice.delete(f"/api/files/{mine['id']}").status_code == 204


def test_a_cross_site_upload_or_form_is_refused(on) -> None:
    client = on(0)
    session = create_session(client)
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert client.post("/api/files", files=[("files", ("a.txt", b"x", "text/plain"))], headers=evil).status_code == 403
    no_token = on(0, cookies_of=client, token=False)
    response = no_token.post(f"/c/{session['id']}/messages", data={"message": "hi"},
                             files=[("files", ("a.txt", b"x", "text/plain"))])
    assert response.status_code == 403


def test_an_upload_interrupted_halfway_stores_nothing(on, hosts, redis_client) -> None:
    import socket
    import time

    client = on(0)
    create_session(client)  # (the identity cookie)
    cookie = client.cookies.get("chat_uid")
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.txt\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode()
    host, port = hosts[0].base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall((f"POST /api/files HTTP/1.1\r\nHost: {host}\r\nCookie: chat_uid={cookie}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 2000000\r\n\r\n").encode()
                     + head + b"x" * 500_000)
        time.sleep(0.3)
    time.sleep(0.5)
    uid = cookie.rpartition(".")[0]
    assert not redis_client.exists(f"chat:{{{uid}}}:uploads")
    assert upload(client, ("after.txt", b"still works", "text/plain")).status_code == 201


def test_files_posted_to_another_users_conversation_are_a_404_and_not_kept(on, redis_client) -> None:
    alice, mallory = on(0), on(1)
    session = create_session(alice)
    create_session(mallory)
    response = mallory.post(f"/c/{session['id']}/messages", data={"message": "mine now"},
                            files=[("files", ("a.txt", b"mallory's file", "text/plain"))])
    assert response.status_code == 404
    uid = mallory.cookies.get("chat_uid").rpartition(".")[0]
    assert not redis_client.exists(f"chat:{{{uid}}}:uploads")
    assert [m["content"] for m in alice.get(f"/api/sessions/{session['id']}/messages").json()["items"]
            if m["role"] == "user"] == []


def test_the_edit_form_keeps_the_files_left_ticked(on, upstream) -> None:
    import time

    client = on(0)
    session = create_session(client)
    files = upload(client, ("keep.txt", b"kept file", "text/plain"), ("drop.txt", b"dropped file", "text/plain")).json()
    posted = client.post(f"/api/sessions/{session['id']}/turns", json={"message": unique("edit-me"),
                                                                       "attachments": [f["id"] for f in files]})
    assert read_events(client, posted.json()["events_url"]).events[-1].type == "end"
    [asked] = [m for m in client.get(f"/api/sessions/{session['id']}/messages").json()["items"] if m["role"] == "user"]
    form = client.get(f"/c/{session['id']}/messages/{asked['index']}/edit", headers={"HX-Request": "true"}).text
    assert 'name="keep"' in form and "drop.txt" in form
    marker = unique("edited")
    response = client.post(f"/c/{session['id']}/messages/{asked['index']}/edit",
                           data={"message": marker, "message_id": asked["id"], "files_listed": "1",
                                 "keep": [files[0]["id"]]})
    assert response.status_code in (200, 303), response.text
    sent = wait_for_request(upstream, marker)
    assert "kept file" in sent and "dropped file" not in sent
    # a file added in the edit form (multipart), the kept one still there (once the reply is saved)
    for _ in range(100):
        items = client.get(f"/api/sessions/{session['id']}/messages").json()["items"]
        if items[-1]["role"] == "assistant" and items[-2]["content"] == marker:
            break
        time.sleep(0.05)
    [asked] = [m for m in client.get(f"/api/sessions/{session['id']}/messages").json()["items"] if m["role"] == "user"]
    added = unique("added")
    response = client.post(f"/c/{session['id']}/messages/{asked['index']}/edit",
                           data={"message": added, "message_id": asked["id"]},
                           files=[("files", ("new.md", b"# a new file", "text/markdown"))])
    assert response.status_code in (200, 303), response.text
    sent = wait_for_request(upstream, added)
    assert "kept file" in sent and "# a new file" in sent


def wait_for_request(upstream: Any, marker: str) -> str:
    import time
    for _ in range(100):
        if upstream.chat_requests(marker):
            return upstream.chat_requests(marker)[-1]["last_user_message"]
        time.sleep(0.05)
    raise AssertionError(f"{marker} never reached the model")


def test_a_resent_multipart_form_sends_its_files_once_and_keeps_no_copy(on, redis_client, upstream) -> None:
    client = on(0)
    session = create_session(client)
    marker = unique("twice")
    form = {"message": marker, "request_id": unique("rid")}
    for _ in range(2):  # a double click without JavaScript
        response = client.post(f"/c/{session['id']}/messages", data=form,
                               files=[("files", ("a.txt", b"sent once", "text/plain"))], follow_redirects=False)
        assert response.status_code == 303
    uid = client.cookies.get("chat_uid").rpartition(".")[0]
    assert not redis_client.exists(f"chat:{{{uid}}}:uploads")
    [asked] = [m for m in client.get(f"/api/sessions/{session['id']}/messages").json()["items"] if m["role"] == "user"]
    assert len(asked["attachments"]) == 1


@pytest.mark.redis_restart
def test_uploads_through_a_redis_restart(on, hosts, redis_server, upstream) -> None:
    """An upload while Redis is down gets a clear error and the app lives on; once Redis is back (this test
    Redis keeps nothing), a fresh upload is stored, sent and served, and a file id from before is refused
    without starting a turn."""
    client = on(0)
    session = create_session(client)
    [before] = upload(client, ("before.txt", b"written before the restart", "text/plain")).json()
    redis_server.stop()
    try:
        during = upload(client, ("during.png", image_bytes(300, 200), "image/png"))
    finally:
        redis_server.start()
    assert during.status_code >= 500 and during.headers["content-type"].startswith("application/json")
    assert "Traceback" not in during.text and "redis.sock" not in during.text
    assert hosts[0].process.poll() is None

    def uploaded() -> dict | None:
        again = on(0)
        response = upload(again, ("after.png", image_bytes(300, 200), "image/png"))
        return {"client": again, "file": response.json()[0]} if response.status_code == 201 else None

    found = wait_until(uploaded, timeout=15, interval=0.3)
    again, photo = found["client"], found["file"]
    fresh = create_session(again)
    stale = again.post(f"/api/sessions/{fresh['id']}/turns", json={"message": "old file", "attachments": [before["id"]]})
    assert stale.status_code == 404, stale.text
    assert again.get(f"/api/sessions/{fresh['id']}/messages").json()["items"][-1]["role"] != "user"
    marker = unique("after-restart")
    posted = again.post(f"/api/sessions/{fresh['id']}/turns", json={"message": marker, "attachments": [photo["id"]]})
    assert posted.status_code == 202, posted.text
    assert read_events(again, posted.json()["events_url"]).events[-1].type == "end"
    assert upstream.chat_requests(marker)[-1]["last_user_parts"][1]["type"] == "image_url"
    assert again.get(f"/c/{fresh['id']}/files/{photo['id']}").status_code == 200
    assert session["id"] != fresh["id"]
