"""Cross-site requests, CSRF tokens and security headers, over real HTTP.

Every state-changing route is tried the way an attacker's page would make a browser send
it (a foreign Origin, a cross-site or same-site Sec-Fetch-Site), and the web UI's routes
also without their token and with another identity's. Each refusal must change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.conftest import (
    RedisServer,
    _start_app,
    _stop_app,
    create_session,
    messages_of,
    page_token,
    start_chat,
    unique,
)

HX = {"HX-Request": "true"}


@dataclass
class Route:
    method: str
    path: str  # `{sid}` is a conversation of the caller's, `{tid}` one of its turns
    page: bool  # a web UI route: it needs the page's token too
    form: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None


ROUTES = [
    Route("POST", "/c", page=True),
    Route("POST", "/lang", page=True, form={"lang": "en", "next": "/"}),
    Route("POST", "/c/{sid}/messages", page=True, form={"message": "hi from a forged form"}),
    Route("POST", "/c/new/messages", page=True, form={"message": "a forged first message"}),  # (makes one)
    Route("POST", "/c/{sid}/stop", page=True),
    Route("POST", "/c/{sid}/role", page=True, form={"role": "teacher"}),
    Route("POST", "/c/{sid}/title", page=True, form={"title": "forged title"}),
    Route("POST", "/c/{sid}/delete", page=True),
    Route("POST", "/c/{sid}/restore", page=True),
    Route("POST", "/settings/tokens", page=True, form={"name": "forged"}),
    Route("POST", "/settings/tokens/{tid}/revoke", page=True),
    Route("POST", "/login", page=False, form={"username": "someone", "password": "a password"}),
    Route("POST", "/signup", page=False, form={"username": "someone", "password": "a password"}),
    Route("POST", "/logout", page=True),  # a forged sign-out would end the victim's sign-in
    Route("POST", "/c/{sid}/regenerate", page=True),
    Route("POST", "/c/{sid}/messages/1/edit", page=True, form={"message": "forged edit", "message_id": "m_0"}),
    Route("POST", "/c/{sid}/messages/2/version", page=True, form={"to": "1"}),
    Route("POST", "/api/turns/{tid}/regenerate", page=False),
    Route("PATCH", "/api/messages/m_0000000000000000", page=False, json={"content": "forged edit"}),
    Route("POST", "/api/sessions/{sid}/messages/2/version", page=False, json={"version": 1}),
    Route("POST", "/chat/start", page=False),
    Route("GET", "/chat/stream", page=False, params={"session_id": "{sid}", "message": "forged turn"}),
    Route("POST", "/api/sessions", page=False, json={}),
    Route("PATCH", "/api/sessions/{sid}", page=False, json={"title": "forged title"}),
    Route("DELETE", "/api/sessions/{sid}", page=False),
    Route("POST", "/api/sessions/{sid}/turns", page=False, json={"message": "forged turn"}),
    Route("POST", "/api/turns/{tid}/cancel", page=False),
    Route("POST", "/c/{sid}/model", page=True, form={"model": "fake-model-large"}),
    Route("POST", "/c/{sid}/share", page=True),
    Route("POST", "/c/{sid}/share/revoke", page=True),
    Route("POST", "/roles", page=True, form={"name": "forged", "system_prompt": "forged prompt"}),
    Route("POST", "/roles/r_0000000000000000", page=True, form={"name": "forged", "system_prompt": "forged"}),
    Route("POST", "/roles/r_0000000000000000/delete", page=True),
    Route("POST", "/settings/import", page=True, form={"file": "{}"}),
    Route("POST", "/api/roles", page=False, json={"name": "forged", "system_prompt": "forged prompt"}),
    Route("PATCH", "/api/roles/r_0000000000000000", page=False, json={"name": "forged"}),
    Route("DELETE", "/api/roles/r_0000000000000000", page=False),
    Route("POST", "/api/sessions/{sid}/share", page=False),
    Route("DELETE", "/api/sessions/{sid}/share", page=False),
    Route("POST", "/api/import", page=False, json={"format": "chat-export", "version": 1, "conversations": []}),
    Route("POST", "/api/files", page=False),
    Route("DELETE", "/api/files/f_0000000000000000", page=False),
]
FOREIGN = [
    ("foreign Origin", {"Origin": "https://evil.example"}),
    ("Origin null (sandboxed frame)", {"Origin": "null"}),
    ("cross-site Sec-Fetch-Site", {"Sec-Fetch-Site": "cross-site"}),
    ("same-site Sec-Fetch-Site (a sibling subdomain)", {"Sec-Fetch-Site": "same-site"}),
]


def send(client: httpx.Client, route: Route, sid: str, tid: str, headers: dict[str, str]) -> httpx.Response:
    params = {k: v.format(sid=sid) for k, v in (route.params or {}).items()} or None
    return client.request(route.method, route.path.format(sid=sid, tid=tid), data=route.form, json=route.json,
                          params=params, headers=headers)


def state_of(client: httpx.Client, sid: str) -> tuple[int, str, str, list[str]]:
    """What a forged request could change: the message count, the title, the role; the conversations."""
    session = client.get(f"/api/sessions/{sid}")
    assert session.status_code == 200, "a refused request deleted the conversation"
    body = session.json()
    listed = client.get("/api/sessions")
    assert listed.status_code == 200
    return messages_of(client, sid)["total"], body["title"], body["role"], sorted(
        item["id"] for item in listed.json()["items"])


@pytest.fixture
def victim(make_client: Callable[..., httpx.Client]) -> tuple[httpx.Client, str, str]:
    """A user with a conversation and a finished turn, who never sends the page's token by itself."""
    client = make_client(page_token=False)
    sid = create_session(client)["id"]
    turn = client.post(f"/api/sessions/{sid}/turns", json={"message": unique("first")})
    assert turn.status_code == 202
    with client.stream("GET", turn.json()["events_url"]) as events:
        events.read()
    return client, sid, turn.json()["turn_id"]


def test_state_changing_requests_from_another_site_are_refused_and_change_nothing(victim: Any) -> None:
    client, sid, tid = victim
    before = state_of(client, sid)
    tried = refused = 0
    for route in ROUTES:
        for label, headers in FOREIGN:
            tried += 1
            response = send(client, route, sid, tid, {**headers, "X-CSRF-Token": page_token(client)})
            assert response.status_code == 403, f"{route.method} {route.path} with {label}: {response.status_code}"
            assert "another site" in response.text or "其他网站" in response.text
            refused += 1
    assert state_of(client, sid) == before
    print(f"cross-site: {refused} of {tried} forged requests refused")
    assert tried == 4 * len(ROUTES)


def test_web_ui_routes_refuse_a_missing_or_foreign_token_and_change_nothing(
    victim: Any, make_client: Callable[..., httpx.Client]
) -> None:
    client, sid, tid = victim
    other = make_client()
    start_chat(other)
    before = state_of(client, sid)
    for route in [r for r in ROUTES if r.page]:
        for label, headers in (("no token", {}), ("another identity's token", {"X-CSRF-Token": page_token(other)}),
                               ("a made-up token", {"X-CSRF-Token": "0" * 32})):
            for mode in ({}, HX):
                response = send(client, route, sid, tid, {**headers, **mode})
                assert response.status_code == 403, f"{route.path} with {label}: {response.status_code}"
                if mode:
                    assert response.headers.get("HX-Retarget") == "#toasts"  # shown as a toast
    assert state_of(client, sid) == before


def test_web_ui_form_posts_with_the_pages_token_work_without_javascript(
    make_client: Callable[..., httpx.Client],
) -> None:
    client = make_client(page_token=False)
    page = BeautifulSoup(client.get("/").text, "html.parser")  # a new user's empty chat
    meta = page.select_one('meta[name="csrf-token"]')["content"]
    forms = page.select('form[method="post"]')
    assert forms and all(f.select_one('input[name="csrf_token"]')["value"] == meta for f in forms)
    first = client.post(page.select_one("#composer")["action"], data={"message": unique("first"), "csrf_token": meta})
    assert first.status_code == 303  # the first send made the conversation
    sid = first.headers["location"].rsplit("/", 1)[1]
    rename = client.post(f"/c/{sid}/title", data={"title": "Typed by hand", "csrf_token": meta})
    assert rename.status_code == 303
    assert client.get(f"/api/sessions/{sid}").json()["title"] == "Typed by hand"
    # the same token in the header, as app.js sends it with every htmx request
    assert client.post(f"/c/{sid}/title", data={"title": "By htmx"}, headers={**HX, "X-CSRF-Token": meta}).is_success


def test_api_clients_without_a_browser_origin_still_work(make_client: Callable[..., httpx.Client]) -> None:
    # the seed page and scripts send no Origin of another site: nothing changes for them
    client = make_client(page_token=False)
    chat = start_chat(client, headers={"Origin": str(client.base_url).rstrip("/")})
    assert chat["session_id"]
    same_site = client.post("/api/sessions", json={}, headers={"Sec-Fetch-Site": "same-origin"})
    assert same_site.status_code == 201


def test_every_response_carries_the_security_headers(client: httpx.Client) -> None:
    page = client.get("/", follow_redirects=True)
    api = client.get("/api/roles")
    missing = client.get("/no-such-page", headers={"Accept": "text/html"})
    for response in (page, api, missing):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-eval" not in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"


def test_pages_have_no_inline_script_and_nothing_htmx_would_eval(client: httpx.Client) -> None:
    page = BeautifulSoup(client.get("/", follow_redirects=True).text, "html.parser")
    assert all(script.get("src", "").startswith("/static/") for script in page.find_all("script"))
    for tag in page.find_all(True):
        handlers = [a for a in tag.attrs if a.startswith(("on", "hx-on", "hx-vars")) or a == "hx-vals"]
        assert handlers == [], f"<{tag.name}> has {handlers}"
        assert "[" not in tag.get("hx-trigger", ""), f"an eval'd trigger filter on <{tag.name}>"
    config = page.select_one('meta[name="htmx-config"]')["content"]
    assert '"allowEval": false' in config


@pytest.mark.parametrize("body", ['{"message": "\\ud800"}', '{"message": "a\\udfffb"}'])
def test_a_lone_surrogate_in_json_is_a_clear_400_and_the_conversation_stays_usable(
    client: httpx.Client, body: str
) -> None:
    sid = create_session(client)["id"]
    response = client.post(f"/api/sessions/{sid}/turns", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "invalid characters" in response.json()["detail"] or "无效字符" in response.json()["detail"]
    title = client.patch(f"/api/sessions/{sid}", content='{"title": "\\ud800"}',
                         headers={"content-type": "application/json"})
    assert title.status_code in (400, 422)  # refused, with a message naming the field or the text
    # nothing was locked or stored: the next real turn goes through
    assert client.post(f"/api/sessions/{sid}/turns", json={"message": unique("after")}).status_code == 202


def test_malformed_cursor_and_out_of_range_index_are_4xx_not_storage_errors(client: httpx.Client) -> None:
    sid = create_session(client)["id"]
    for path in (f"/api/sessions?cursor=nan_{sid}", "/api/sessions?cursor=1.5_not-an-id", "/api/sessions?cursor=x",
                 f"/api/sessions/{sid}/messages?before=99999999999999999999"):
        response = client.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)


def test_cookies_are_secure_behind_an_https_proxy(make_client: Callable[..., httpx.Client]) -> None:
    # 127.0.0.1 is a trusted proxy in the tests: its X-Forwarded-Proto says the user is on https
    client = make_client()
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    first = client.get("/", headers=https)
    assert "Secure" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
    plain = make_client()
    assert "Secure" not in plain.get("/").headers["set-cookie"]
    # (the secure cookie is not sent back over the tests' plain http: switch with the plain one)
    switch = plain.post("/lang", data={"lang": "en", "next": "/"}, headers=https)
    assert "Secure" in switch.headers["set-cookie"]


def test_a_proxys_basic_credentials_are_ignored_and_bypass_no_csrf_check(
    make_client: Callable[..., httpx.Client],
) -> None:
    # behind nginx auth_basic every browser request carries `Authorization: Basic ...`
    client = make_client(page_token=False, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert client.get("/").status_code == 200
    sid = client.post("/api/sessions", json={}).json()["id"]
    assert client.get("/api/sessions").status_code == 200
    assert client.post(f"/c/{sid}/title", data={"title": "forged"}).status_code == 403  # still needs the token


def test_a_same_origin_request_passes_behind_a_proxy_that_rewrites_host(client: httpx.Client) -> None:
    # nginx's proxy_pass sends Host: 127.0.0.1:8000 while the browser's Origin names the public site
    session = client.post("/api/sessions", json={}, headers={"Origin": "https://chat.example.com",
                                                              "Sec-Fetch-Site": "same-origin"})
    assert session.status_code == 201
    forwarded = client.post("/api/sessions", json={}, headers={"Origin": "https://chat.example.com",
                                                                "X-Forwarded-Host": "chat.example.com"})
    assert forwarded.status_code == 201


def test_x_forwarded_host_names_this_site_only_when_a_trusted_proxy_sends_it(
    redis_server: RedisServer, tmp_path: Path,
) -> None:
    """Anyone can send X-Forwarded-Host: from a peer that is no trusted proxy (FORWARDED_ALLOW_IPS names
    another address), a foreign Origin that the header repeats is still another site."""
    app = _start_app(tmp_path, {"REDIS_URL": redis_server.url, "OPENAI_API_KEY": "",
                                "FORWARDED_ALLOW_IPS": "10.9.9.9"})
    try:
        with httpx.Client(base_url=app.base_url, timeout=30) as client:
            forged = client.post("/api/sessions", json={}, headers={"Origin": "https://evil.example",
                                                                     "X-Forwarded-Host": "evil.example"})
            assert forged.status_code == 403
            assert client.get("/api/sessions").json()["items"] == []
            assert client.post("/api/sessions", json={}).status_code == 201  # a script sends no Origin
    finally:
        _stop_app(app)


def test_metrics_and_the_upstream_probe_answer_this_machine_or_a_token_only(client: httpx.Client) -> None:
    """No METRICS_TOKEN: /metrics and /readyz?upstream=1 answer the machine itself (and FORWARDED_ALLOW_IPS),
    not a visitor a proxy relays (its X-Forwarded-For names the visitor). /readyz stays open (health checks)."""
    visitor = {"X-Forwarded-For": "203.0.113.7"}  # relayed by the trusted proxy 127.0.0.1
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", headers=visitor).status_code == 403
    assert client.get("/readyz", params={"upstream": "1"}, headers=visitor).status_code == 403
    assert client.get("/readyz", headers=visitor).status_code == 200
    claimed = {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}  # a visitor claiming to be the machine itself
    assert client.get("/metrics", headers=claimed).status_code == 403


def test_api_docs_are_on_in_anonymous_mode(client: httpx.Client) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 200, path
