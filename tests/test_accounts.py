"""Accounts, sign-ins, API tokens, trusted-proxy sign-in, the seed API's modes, and the limits.

Each mode runs as its own app process (`python -m webapp` with AUTH=...) on the shared
redis-server. Tests that count per client IP speak through X-Forwarded-For from 127.0.0.1
(a trusted proxy), each with an address of its own, so their windows never meet.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.conftest import (
    REPO_ROOT,
    TEST_SECRET_KEY,
    AppServer,
    RedisServer,
    SSEEvent,
    _start_app,
    _stop_app,
    closing_clients,
    create_session,
    iter_sse,
    read_events,
    start_chat,
    unique,
)
from tests.fake_upstream import ThreadedFakeUpstream

PASSWORD = "correct horse battery"
ACCOUNTS_SETTINGS = dict(AUTH="accounts", SIGN_INS_PER_IP_PER_MINUTE="100", SIGNUPS_PER_IP_PER_HOUR="3",
                         SIGN_IN_FAILURES_PER_ACCOUNT_AND_IP_PER_HOUR="5", SIGN_IN_FAILURES_PER_ACCOUNT_PER_HOUR="15")
EN = {"Accept-Language": "en"}
API_KEY = "sk-test-never-shown-3141592653"
_addresses = itertools.count(1)


def new_ip() -> dict[str, str]:
    """Headers of a request relayed by the trusted proxy (127.0.0.1) for a client address of its own."""
    n = next(_addresses)
    return {"X-Forwarded-For": f"198.51.{n // 250}.{n % 250 + 1}"}


def within_one_minute_window(needed: float = 20.0, window: int = 60) -> None:
    """Limits count in sliding windows made of two fixed ones (core/limits.py), whose rounding lets one
    more in just after a boundary: a test that makes a window's allowance of requests waits for a new
    window when fewer than `needed` seconds are left in this one, so its counts are exact."""
    left = window - time.time() % window
    if left < needed:
        time.sleep(left + 0.1)


def start(redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory,
          **settings: str) -> AppServer:
    return _start_app(tmp_path_factory.mktemp("app"), {
        "REDIS_URL": redis_server.url, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_MODEL": "fake-model", **settings,
    })


@pytest.fixture(scope="module")
def accounts_app(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = start(redis_server, upstream, tmp_path_factory, **ACCOUNTS_SETTINGS)
    yield app
    _stop_app(app)


@pytest.fixture(scope="module")
def accounts_app_b(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """A second host of the same accounts instance: the same Redis, the same SECRET_KEY."""
    app = start(redis_server, upstream, tmp_path_factory, **ACCOUNTS_SETTINGS)
    yield app
    _stop_app(app)


@pytest.fixture(scope="module")
def limited_app(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = start(redis_server, upstream, tmp_path_factory, NEW_IDENTITIES_PER_IP_PER_HOUR="3",
                TURNS_PER_IP_PER_MINUTE="4", MAX_CONVERSATIONS_PER_USER="3", MAX_STREAMS_PER_USER="2",
                MAX_BODY_BYTES="20000", READYZ_TOKEN="ops-token-for-tests")
    yield app
    _stop_app(app)


@pytest.fixture
def make() -> Iterator[Callable[..., httpx.Client]]:
    with closing_clients() as new:
        yield lambda app, **options: new(app.base_url, **options)


def sign_up(client: httpx.Client, username: str | None = None, **headers: str) -> str:
    username = username or unique("user")[:32]
    response = client.post("/signup", data={"username": username, "password": PASSWORD, "next": "/"},
                           headers=headers)
    assert response.status_code == 303, response.text
    assert "chat_signin" in response.cookies
    return username


def page_token_of(client: httpx.Client) -> str:
    page = BeautifulSoup(client.get("/", follow_redirects=True).text, "html.parser")
    return page.select_one('meta[name="csrf-token"]')["content"]


# ------------------------------------------------------------------ accounts


def test_pages_and_api_need_a_sign_in_in_accounts_mode(accounts_app: AppServer, make: Any) -> None:
    client = make(accounts_app)
    page = client.get("/c/00000000-0000-4000-8000-000000000000")
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    htmx = client.get("/", headers={"HX-Request": "true", "Accept": "text/html"})
    assert htmx.status_code == 204 and htmx.headers["HX-Redirect"] == "/login?next=/"
    api = client.get("/api/sessions")
    assert api.status_code == 401 and api.json()["detail"]
    login = BeautifulSoup(client.get("/login").text, "html.parser")
    assert login.select_one('form[action="/login"] input[name="username"]')
    assert login.select_one('input[name="password"][type="password"]')


def test_sign_up_sign_in_and_sign_out(accounts_app: AppServer, make: Any) -> None:
    first = make(accounts_app)
    username = sign_up(first, **new_ip())
    session_id = create_session(first)["id"]
    assert first.get(f"/api/sessions/{session_id}").status_code == 200

    second = make(accounts_app)  # another device
    wrong = second.post("/login", data={"username": username, "password": "not the password"})
    assert wrong.status_code == 401
    form = BeautifulSoup(wrong.text, "html.parser")
    assert form.select_one('input[name="username"]')["value"] == username  # kept
    assert form.select_one('[role="alert"]').get_text(strip=True) in ("Wrong username or password", "用户名或密码错误")
    right = second.post("/login", data={"username": username.upper(), "password": PASSWORD, "next": "/c/x"})
    assert right.status_code == 303 and right.headers["location"] == "/"  # next is only ever one of our pages
    assert [s["id"] for s in second.get("/api/sessions").json()["items"]] == [session_id]

    assert second.post("/logout").status_code == 403  # a forged sign-out: no page token
    assert second.get("/api/sessions").status_code == 200
    out = second.post("/logout", data={"csrf_token": page_token_of(second)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert second.get("/api/sessions").status_code == 401
    assert first.get("/api/sessions").status_code == 200  # only that browser


def test_a_taken_username_and_a_short_password_are_refused(accounts_app: AppServer, make: Any) -> None:
    client = make(accounts_app)
    username = sign_up(client, **new_ip())
    other = make(accounts_app)
    taken = other.post("/signup", data={"username": username.swapcase(), "password": PASSWORD}, headers=new_ip())
    assert taken.status_code == 409
    short = other.post("/signup", data={"username": unique("u")[:30], "password": "short"}, headers=new_ip())
    assert short.status_code == 400
    bad_name = other.post("/signup", data={"username": "<b>x</b>", "password": PASSWORD}, headers=new_ip())
    assert bad_name.status_code == 400 and "<b>x</b>" not in bad_name.text.replace("&lt;b&gt;", "")


def test_sign_out_everywhere_ends_every_sign_in_and_offers_to_revoke_the_api_tokens(
    accounts_app: AppServer, make: Any
) -> None:
    laptop, phone = make(accounts_app, headers=EN), make(accounts_app)
    username = sign_up(laptop, **new_ip())
    assert phone.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    token = laptop.post("/api/tokens", json={"name": "script"}).json()["token"]
    script = make(accounts_app, headers={"Authorization": f"Bearer {token}"})
    settings = BeautifulSoup(laptop.get("/settings").text, "html.parser")
    form = settings.select_one('form[action="/logout"]')
    assert form.select_one('input[name="everywhere"]') and form.select_one('input[name="tokens"][type="checkbox"]')
    assert "(1)" in form.get_text()  # says how many tokens it would revoke

    out = laptop.post("/logout", data={"everywhere": "1", "csrf_token": page_token_of(laptop)})
    assert out.status_code == 303
    notice = BeautifulSoup(laptop.get(out.headers["location"]).text, "html.parser").select_one('[role="status"]')
    assert notice.get_text(strip=True) == ("Signed out everywhere: 2 sign-ins ended. API tokens still work "
                                           "(revoke them in Settings).")
    assert phone.get("/api/sessions").status_code == 401 and laptop.get("/api/sessions").status_code == 401
    assert script.get("/api/sessions").status_code == 200  # kept, as the page said

    assert laptop.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    out = laptop.post("/logout", data={"everywhere": "1", "tokens": "1", "csrf_token": page_token_of(laptop)})
    notice = BeautifulSoup(laptop.get(out.headers["location"]).text, "html.parser").select_one('[role="status"]')
    assert notice.get_text(strip=True) == "Signed out everywhere: 1 sign-ins ended and 1 API tokens revoked."
    assert script.get("/api/sessions").status_code == 401


@pytest.mark.parametrize("password, rule", [
    ("password", "one of the most common passwords"),
    ("12345678", "one of the most common passwords"),
    ("Qwerty123", "one of the most common passwords"),
    ("        ", "at least 8 characters"),  # eight spaces
    ("\u200b" * 8, "at least 8 characters"),  # eight zero-width spaces
    ("short", "at least 8 characters"),
    ("{username}", "may not be or contain the username"),
    ("{username}-2026", "may not be or contain the username"),
])
def test_weak_passwords_are_refused_with_the_rule_they_break(accounts_app: AppServer, make: Any, password: str,
                                                             rule: str) -> None:
    client = make(accounts_app, headers=EN)
    username = unique("pw")[:30]
    refused = client.post("/signup", data={"username": username, "password": password.format(username=username)},
                          headers=new_ip())
    assert refused.status_code == 400
    assert rule in BeautifulSoup(refused.text, "html.parser").select_one('[role="alert"]').get_text()
    assert "chat_signin" not in refused.cookies
    chinese = make(accounts_app).post("/signup", data={"username": username, "password": "password"},
                                      headers=new_ip())
    assert "最常见的密码" in chinese.text


def test_the_anonymous_history_is_claimed_at_sign_up(
    app_server: AppServer, accounts_app: AppServer, make: Any
) -> None:
    # the same browser, first on the anonymous app, then signing up once accounts are on
    anonymous = make(app_server)
    chat = start_chat(anonymous)
    account = make(accounts_app)
    account.cookies.set("chat_uid", anonymous.cookies["chat_uid"])
    sign_up(account, **new_ip())
    assert chat["session_id"] in [s["id"] for s in account.get("/api/sessions").json()["items"]]
    history = account.get(f"/api/sessions/{chat['session_id']}/messages").json()
    assert history["total"] == 1


def test_a_guesser_cannot_lock_the_owner_out(accounts_app: AppServer, make: Any) -> None:
    """Five wrong passwords an hour per (account, address), fifteen per account from browsers that never
    signed in to it (ACCOUNTS_SETTINGS): a guesser is held where it guesses, the owner signs in from
    elsewhere, and when guessers at many addresses reach the account's ceiling, the owner's own
    browser still signs in."""
    within_one_minute_window(30, window=3600)
    owner = make(accounts_app)
    username = sign_up(owner, **new_ip())  # (this browser now carries its mark: chat_known)
    guesser, guesser_ip = make(accounts_app, headers=EN), new_ip()
    statuses = [guesser.post("/login", data={"username": username, "password": f"guess-{n:04d}"},
                             headers=guesser_ip).status_code for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    held = guesser.post("/login", data={"username": username, "password": PASSWORD}, headers=guesser_ip)
    assert held.status_code == 429 and int(held.headers["Retry-After"]) >= 1  # even the right password, there
    assert "Too many wrong passwords from here" in held.text
    new_browser = make(accounts_app)
    assert new_browser.post("/login", data={"username": username, "password": PASSWORD},
                            headers=new_ip()).status_code == 303  # the owner, elsewhere

    for _ in range(2):  # two more addresses: fifteen wrong passwords for the account in all
        address = new_ip()
        assert [make(accounts_app).post("/login", data={"username": username, "password": "wrong-guess"},
                                        headers=address).status_code for _ in range(5)] == [401] * 5
    stranger = make(accounts_app, headers=EN).post("/login", data={"username": username, "password": PASSWORD},
                                                   headers=new_ip())
    assert stranger.status_code == 429 and "Sign in from a device you used before" in stranger.text
    assert owner.post("/logout", data={"csrf_token": page_token_of(owner)}).status_code == 303
    back = owner.post("/login", data={"username": username, "password": PASSWORD}, headers=new_ip())
    assert back.status_code == 303 and owner.get("/api/sessions").status_code == 200


def test_sign_ups_per_ip_are_limited(accounts_app: AppServer, make: Any) -> None:
    ip = new_ip()
    statuses = [make(accounts_app).post("/signup", data={"username": unique("s")[:30], "password": PASSWORD},
                                        headers=ip).status_code for _ in range(4)]
    assert statuses == [303, 303, 303, 429]


def test_invite_only_with_create_user(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory,
    make: Any,
) -> None:
    app = start(redis_server, upstream, tmp_path_factory, AUTH="accounts", ALLOW_SIGNUP="false")
    try:
        client = make(app)
        assert client.post("/signup", data={"username": unique("x")[:30], "password": PASSWORD}).status_code == 403
        username = unique("invited")[:30]
        env = {**os.environ, "REDIS_URL": redis_server.url, "SECRET_KEY": TEST_SECRET_KEY,
               "DATA_DIR": str(tmp_path_factory.mktemp("cli"))}
        made = subprocess.run([sys.executable, "-m", "webapp", "create-user", username], input=PASSWORD + "\n",
                              capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60)
        assert made.returncode == 0, made.stderr
        again = subprocess.run([sys.executable, "-m", "webapp", "create-user", username], input=PASSWORD + "\n",
                               capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60)
        assert again.returncode == 1 and "taken" in again.stderr
        assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
        assert client.get("/api/sessions").status_code == 200
    finally:
        _stop_app(app)


# ------------------------------------------------------------------ API tokens


def test_api_tokens_are_shown_once_work_on_api_and_sse_and_can_be_revoked(
    app_server: AppServer, make: Any
) -> None:
    owner = make(app_server)
    session_id = create_session(owner)["id"]
    created = owner.post("/api/tokens", json={"name": "my script"})
    assert created.status_code == 201
    token_id, token = created.json()["id"], created.json()["token"]
    listed = owner.get("/api/tokens").json()
    assert [t["id"] for t in listed] == [token_id] and "token" not in listed[0]

    script = make(app_server, headers={"Authorization": f"Bearer {token}"})  # no cookie at all
    assert session_id in [s["id"] for s in script.get("/api/sessions").json()["items"]]
    turn = script.post(f"/api/sessions/{session_id}/turns", json={"message": unique("by token")})
    assert turn.status_code == 202
    events = read_events(script, turn.json()["events_url"])
    assert events.ended
    assert "set-cookie" not in turn.headers  # a token caller gets no identity cookie

    stranger = make(app_server)
    create_session(stranger)
    assert stranger.delete(f"/api/tokens/{token_id}").status_code == 404  # someone else's token
    assert owner.delete(f"/api/tokens/{token_id}").status_code == 204
    revoked = script.get("/api/sessions")
    assert revoked.status_code == 401
    assert make(app_server, headers={"Authorization": "Bearer chat_made-up"}).get("/api/sessions").status_code == 401


def test_a_token_reaches_only_its_own_users_data(app_server: AppServer, make: Any) -> None:
    alice, bob = make(app_server), make(app_server)
    alice_session = create_session(alice)["id"]
    create_session(bob)
    bob_token = bob.post("/api/tokens", json={}).json()["token"]
    as_bob = make(app_server, headers={"Authorization": f"Bearer {bob_token}"})
    for method, path in (("GET", f"/api/sessions/{alice_session}"), ("GET", f"/api/sessions/{alice_session}/messages"),
                         ("PATCH", f"/api/sessions/{alice_session}"), ("DELETE", f"/api/sessions/{alice_session}")):
        response = as_bob.request(method, path, json={"title": "x"} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.status_code)
    assert alice.get(f"/api/sessions/{alice_session}").status_code == 200


def test_tokens_are_created_and_revoked_in_the_settings_page_without_javascript(
    app_server: AppServer, make: Any
) -> None:
    client = make(app_server)
    token = page_token_of(client)
    created = client.post("/settings/tokens", data={"name": "<i>ci</i>", "csrf_token": token})
    assert created.status_code == 201
    page = BeautifulSoup(created.text, "html.parser")
    secret = page.select_one("#new-token").get_text(strip=True)
    assert secret.startswith("chat_") and "<i>ci</i>" in page.select_one(".tokens__name").get_text()
    assert secret not in client.get("/settings").text  # shown once
    form = page.select_one(".tokens__item form")
    assert client.post(form["action"], data={"csrf_token": token}).status_code == 303
    assert make(app_server, headers={"Authorization": f"Bearer {secret}"}).get("/api/sessions").status_code == 401


def test_the_seed_api_is_token_only_in_accounts_mode(accounts_app: AppServer, make: Any) -> None:
    client = make(accounts_app)
    sign_up(client, **new_ip())
    token = client.post("/api/tokens", json={}).json()["token"]
    seed = make(accounts_app)
    assert seed.post("/chat/start").status_code == 401
    as_script = make(accounts_app, headers={"Authorization": f"Bearer {token}"})
    chat = start_chat(as_script)
    assert as_script.post("/chat/start", params={"user_id": "someone-else"}).status_code == 403
    assert chat["session_id"] in [s["id"] for s in client.get("/api/sessions").json()["items"]]


# ------------------------------------------------------------------ open streams end with their credential

SLOW = "[[tokens:600]] [[delay:50]]"  # a reply that takes ~30 s: its streams stay open until ended


class OpenStream(threading.Thread):
    """A stream read in a thread of its own, every event with the time it arrived."""

    def __init__(self, app: AppServer, path: str, *, params: dict[str, str] | None = None,
                 cookies: Any = None, token: str | None = None) -> None:
        super().__init__(daemon=True)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=app.base_url, cookies=cookies, headers=headers, timeout=60)
        self.path, self.params = path, params
        self.status = 0
        self.events: list[tuple[float, SSEEvent]] = []
        self.ended_at: float | None = None
        self.opened = threading.Event()
        self.start()
        assert self.opened.wait(10), f"{path} did not answer"

    def run(self) -> None:
        try:
            with self.client.stream("GET", self.path, params=self.params) as response:
                self.status = response.status_code
                self.opened.set()
                for event in iter_sse(response):
                    self.events.append((time.monotonic(), event))
        except httpx.HTTPError:
            pass
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()
            self.client.close()

    def farewell_after(self, moment: float, timeout: float = 5.0) -> tuple[float, SSEEvent]:
        """(seconds from `moment` to the stream's end, its last event) once it ended."""
        self.join(timeout)
        assert self.ended_at is not None, f"{self.path} still open {timeout} s later"
        assert self.events, f"{self.path} ended with no event"
        return self.ended_at - moment, self.events[-1][1]

    def still_open(self) -> bool:
        return self.is_alive() and self.ended_at is None


def test_open_streams_end_within_two_seconds_when_their_sign_in_or_token_ends_on_any_host(
    accounts_app: AppServer, accounts_app_b: AppServer, make: Any,
) -> None:
    """Two hosts of one instance on one Redis. Streams opened on either host (a page's channel, a turn's
    web and API streams, the seed's stream) with a cookie or a token end with a clear last event
    within 2 s of a token's deletion, a sign-out, or a sign-out everywhere on the other host (or this
    one), and a reconnect is refused; streams of what was not revoked go on."""
    a, b = accounts_app, accounts_app_b
    laptop = make(a, headers=EN)
    username = sign_up(laptop, **new_ip())
    phone = make(b)
    assert phone.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
    created = laptop.post("/api/tokens", json={"name": "script"}).json()
    token_id, token = created["id"], created["token"]
    sids = [create_session(laptop)["id"] for _ in range(5)]

    def slow_turn(client: httpx.Client, sid: str) -> str:
        posted = client.post(f"/api/sessions/{sid}/turns", json={"message": f"{unique('slow')} {SLOW}"})
        assert posted.status_code == 202, f"{posted.status_code}; the hosts' logs: {a.log()[-2000:]}{b.log()[-2000:]}"
        return posted.json()["turn_id"]

    script_a = make(a, headers={"Authorization": f"Bearer {token}"})
    streams = {
        "laptop channel on B": OpenStream(b, f"/c/{sids[0]}/events", params={"channel": "laptopch"},
                                          cookies=laptop.cookies),
        "laptop API turn on B": OpenStream(b, f"/api/turns/{slow_turn(laptop, sids[1])}/events",
                                           cookies=laptop.cookies),
        "laptop web turn on A": OpenStream(a, f"/c/{sids[4]}/turns/{slow_turn(laptop, sids[4])}/events",
                                           cookies=laptop.cookies),
        "token seed stream on B": OpenStream(b, "/chat/stream", token=token,
                                             params={"session_id": sids[2], "message": f"{unique('seed')} {SLOW}"}),
        "token API turn on A": OpenStream(a, f"/api/turns/{slow_turn(script_a, sids[3])}/events", token=token),
        "phone channel on A": OpenStream(a, f"/c/{sids[0]}/events", params={"channel": "phonech"},
                                         cookies=phone.cookies),
    }
    assert all(stream.status == 200 for stream in streams.values()), {k: s.status for k, s in streams.items()}
    time.sleep(0.5)
    took: dict[str, float] = {}

    def ended(names: list[str], moment: float) -> None:
        for name in names:
            seconds, last = streams[name].farewell_after(moment)
            took[name] = round(seconds, 3)
            assert seconds < 2.0, (name, seconds)
            if last.event in ("revoked", "done"):  # the web UI's: a bubble saying so, with the sign-in link
                assert ("signed out or revoked" in last.data or "已退出或令牌已撤销" in last.data) \
                    and 'href="/login"' in last.data, (name, last)
            else:
                assert last.data["type"] == "error" and last.data["code"] == "revoked", (name, last)

    moment = time.monotonic()
    assert laptop.delete(f"/api/tokens/{token_id}").status_code == 204  # on A
    ended(["token seed stream on B", "token API turn on A"], moment)
    assert all(streams[name].still_open() for name in streams if not name.startswith("token"))
    assert make(b, headers={"Authorization": f"Bearer {token}"}).get("/chat/stream", params={
        "session_id": sids[2], "message": "again"}).status_code == 401

    moment = time.monotonic()
    assert phone.post("/logout", data={"csrf_token": page_token_of(phone)}).status_code == 303  # on B
    ended(["phone channel on A"], moment)
    assert all(streams[name].still_open() for name in streams if name.startswith("laptop"))

    moment = time.monotonic()
    laptop_cookies = httpx.Cookies(laptop.cookies)
    out = laptop.post("/logout", data={"everywhere": "1", "csrf_token": page_token_of(laptop)})  # on A
    assert out.status_code == 303
    ended(["laptop channel on B", "laptop API turn on B", "laptop web turn on A"], moment)
    for host in (a, b):
        again = make(host, cookies=laptop_cookies).get(f"/c/{sids[0]}/events", params={"channel": "again"})
        assert again.status_code == 401
    print(f"\nstreams ended after revocation (s): {took}")


# ------------------------------------------------------------------ a trusted SSO proxy


def test_proxy_mode_trusts_the_user_header_only_from_a_trusted_proxy(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory,
    make: Any,
) -> None:
    trusted = start(redis_server, upstream, tmp_path_factory, AUTH="proxy", FORWARDED_ALLOW_IPS="127.0.0.1")
    untrusted = start(redis_server, upstream, tmp_path_factory, AUTH="proxy", FORWARDED_ALLOW_IPS="10.9.9.9")
    try:
        name = unique("sso")[:30]
        alice = make(trusted, headers={"Remote-User": name})
        session_id = create_session(alice)["id"]
        again = make(trusted, headers={"Remote-User": name})  # another device, the same person
        assert session_id in [s["id"] for s in again.get("/api/sessions").json()["items"]]
        assert make(trusted).get("/api/sessions").status_code == 401
        forged = make(untrusted, headers={"Remote-User": name})
        assert forged.get("/api/sessions").status_code == 401
    finally:
        _stop_app(trusted)
        _stop_app(untrusted)


# ------------------------------------------------------------------ limits


def test_new_identities_and_turns_per_ip_are_limited(limited_app: AppServer, make: Any) -> None:
    ip = new_ip()
    statuses = [make(limited_app).post("/api/sessions", json={}, headers=ip).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]

    client = make(limited_app)
    turn_ip = new_ip()
    session_id = create_session(client)["id"]
    within_one_minute_window()
    results = []
    for n in range(5):
        response = client.post(f"/api/sessions/{session_id}/turns", json={"message": f"n{n}"}, headers=turn_ip)
        results.append(response.status_code)
        if response.status_code == 202:
            read_events(client, response.json()["events_url"])
    assert results == [202, 202, 202, 202, 429]


def test_a_repeated_request_starts_nothing_and_counts_once_toward_the_limit(limited_app: AppServer,
                                                                            make: Any) -> None:
    """The request id is claimed in the round trip that takes the lock and counts the limits: a repeat
    (a double click, a resent request) gives back its count, so only turns that start count."""
    client = make(limited_app)
    turn_ip = new_ip()
    session_id = create_session(client)["id"]
    within_one_minute_window()
    first = client.post(f"/api/sessions/{session_id}/turns", json={"message": "once"},
                        headers={**turn_ip, "Idempotency-Key": "same-key"})
    assert first.status_code == 202
    for _ in range(5):  # repeats while it runs and after it ended: the same turn, never a 429
        again = client.post(f"/api/sessions/{session_id}/turns", json={"message": "once"},
                            headers={**turn_ip, "Idempotency-Key": "same-key"})
        assert again.status_code == 202 and again.json()["turn_id"] == first.json()["turn_id"]
    read_events(client, first.json()["events_url"])
    results = []
    for n in range(4):  # three more turns fit in the 4 per minute, the fourth does not
        response = client.post(f"/api/sessions/{session_id}/turns", json={"message": f"n{n}"}, headers=turn_ip)
        results.append(response.status_code)
        if response.status_code == 202:
            read_events(client, response.json()["events_url"])
    assert results == [202, 202, 202, 429]
    history = client.get(f"/api/sessions/{session_id}/messages").json()["items"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["once", "n0", "n1", "n2"]


def test_reading_with_a_user_id_claims_nothing(limited_app: AppServer, make: Any) -> None:
    name = unique("bob")
    looked = make(limited_app).get("/chat/history", params={"user_id": name, "session_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12},
                                   headers=new_ip())
    assert looked.status_code == 404
    assert "set-cookie" not in looked.headers
    chat = start_chat(make(limited_app), user_id=name, headers=new_ip())  # the name is still free
    assert chat["user_id"] == name


def test_a_429_in_the_web_ui_keeps_the_typed_text(limited_app: AppServer, make: Any) -> None:
    client = make(limited_app)
    ip = new_ip()
    home = client.get("/", headers=ip)  # an empty chat: the first send makes the conversation
    token = BeautifulSoup(home.text, "html.parser").select_one('meta[name="csrf-token"]')["content"]
    session_id = ""
    within_one_minute_window()
    for n in range(4):
        to = f"/c/{session_id}/messages" if session_id else "/c/new/messages"
        sent = client.post(to, data={"message": f"m{n}", "csrf_token": token}, headers=ip)
        assert sent.status_code == 303
        session_id = sent.headers["location"].rsplit("/", 1)[1]
        for _ in range(100):
            if client.get(f"/api/sessions/{session_id}").json()["running_turn_id"] is None:
                break
            time.sleep(0.05)
    typed = "please keep what I typed"
    refused = client.post(f"/c/{session_id}/messages", data={"message": typed, "csrf_token": token}, headers=ip)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    page = BeautifulSoup(refused.text, "html.parser")
    assert page.select_one("#composer-input").get_text() == typed
    assert page.select_one(".composer__error")
    toast = client.post(f"/c/{session_id}/messages", data={"message": typed},
                        headers={**ip, "HX-Request": "true", "X-CSRF-Token": token})
    assert toast.status_code == 429 and toast.headers["HX-Retarget"] == "#toasts"


def test_conversations_made_at_once_never_pass_the_per_user_limit(limited_app: AppServer, make: Any) -> None:
    """The limit is checked in the write that makes the conversation: eight made in the same instant
    by one identity (MAX_CONVERSATIONS_PER_USER=3) leave exactly three."""
    client = make(limited_app)
    client.get("/api/sessions")  # (the identity's cookie)
    barrier = threading.Barrier(8)

    def make_one(_: int) -> int:
        with httpx.Client(base_url=limited_app.base_url, timeout=30, cookies=client.cookies) as tab:
            barrier.wait()
            return tab.post("/api/sessions", json={}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(make_one, range(8)))
    assert codes == [201] * 3 + [409] * 5, codes
    assert len(client.get("/api/sessions").json()["items"]) == 3


def test_abuse_limits_are_clear_errors(limited_app: AppServer, make: Any) -> None:
    client = make(limited_app)
    ids = [create_session(client)["id"] for _ in range(3)]
    fourth = client.post("/api/sessions", json={})
    assert fourth.status_code == 409 and "3" in fourth.json()["detail"]
    big = client.post(f"/api/sessions/{ids[0]}/turns", content=b'{"message": "' + b"x" * 30000 + b'"}',
                      headers={"content-type": "application/json"})
    assert big.status_code == 413
    streams = []
    try:
        for session_id in ids[:2]:
            turn = client.post(f"/api/sessions/{session_id}/turns", json={"message": "slow [[tokens:80]] [[delay:50]]"})
            stream = client.stream("GET", turn.json()["events_url"])
            streams.append(stream)
            stream.__enter__()
        third = client.post(f"/api/sessions/{ids[2]}/turns", json={"message": "one more"})
        refused = client.get(third.json()["events_url"])
        assert refused.status_code == 429
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)


def test_api_docs_are_off_by_default_with_accounts(accounts_app: AppServer, make: Any) -> None:
    client = make(accounts_app)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404, path


@pytest.fixture(scope="module")
def doors_app(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The limits of the doors that write besides a turn, low enough to reach."""
    app = start(redis_server, upstream, tmp_path_factory, CONVERSATIONS_PER_MINUTE="5", IMPORTS_PER_HOUR="3",
                IMPORT_BYTES_PER_HOUR="3000000", MAX_IMPORT_MESSAGE_CHARS="50000")
    yield app
    _stop_app(app)


def test_conversations_made_per_minute_are_limited(doors_app: AppServer, make: Any) -> None:
    """The probe made 300 conversations in a second; now the sixth of five a minute is a 429 and makes
    nothing, by the API, the seed's /chat/start and the web UI's New chat alike."""
    client = make(doors_app, headers=EN)
    within_one_minute_window()
    statuses = [client.post("/api/sessions", json={}).status_code for _ in range(7)]
    assert statuses == [201] * 5 + [429] * 2
    refused = client.post("/api/sessions", json={})
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 61
    assert client.post("/chat/start").status_code == 429
    assert len(client.get("/api/sessions").json()["items"]) == 5
    other = make(doors_app)
    assert other.post("/api/sessions", json={}).status_code == 201  # per user


def export_of(conversations: int, message_chars: int, messages: int = 2) -> bytes:
    return json.dumps({"format": "chat-export", "version": 1, "conversations": [
        {"title": f"imported {n}", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
         "messages": [{"role": ("user", "assistant")[m % 2], "content": "字" * message_chars}
                      for m in range(messages)]} for n in range(conversations)]}, ensure_ascii=False).encode()


def test_imports_are_limited_per_hour_in_number_and_bytes_and_message_length(doors_app: AppServer,
                                                                              make: Any) -> None:
    """The probe added 93 MB in 2.8 s with four 18 MB imports, and messages of 200,000 characters. Now: a
    message over MAX_IMPORT_MESSAGE_CHARS refuses the file (409, nothing written), and the bytes and the
    imports an hour are counted (429 with Retry-After, nothing written)."""
    client = make(doors_app, headers=EN)
    create_session(client)
    within_one_minute_window(30, window=3600)
    json_type = {"content-type": "application/json"}
    long_message = client.post("/api/import", content=export_of(1, 50_001), headers=json_type)
    assert long_message.status_code == 409 and "characters per message: 50000" in long_message.json()["detail"]
    big = export_of(7, 50_000)  # ~2.1 MB (the characters are 3 bytes each)
    assert client.post("/api/import", content=big, headers=json_type).status_code == 201
    again = client.post("/api/import", content=big, headers=json_type)  # 4.2 MB within the hour: over 3 MB
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 60
    assert "Too many or too large imports this hour" in again.json()["detail"]
    assert len(client.get("/api/sessions", params={"limit": 100}).json()["items"]) == 1 + 7
    small = export_of(1, 10)
    assert [client.post("/api/import", content=small, headers=json_type).status_code
            for _ in range(3)] == [201, 201, 429]  # three imports an hour, the big one counted


def test_a_storage_quota_refuses_what_would_not_fit_and_says_so(
    redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp_path_factory: pytest.TempPathFactory, make: Any,
) -> None:
    """STORAGE_QUOTA_BYTES (1 MB here): a user's data as Redis holds it, shown in Settings; an import that
    would pass it is a 413 naming the figures and writes nothing; deleting makes room."""
    app = start(redis_server, upstream, tmp_path_factory, STORAGE_QUOTA_BYTES="1000000")
    try:
        client = make(app, headers=EN)
        create_session(client)
        json_type = {"content-type": "application/json"}
        assert client.post("/api/import", content=export_of(2, 50_000), headers=json_type).status_code == 201
        shown = BeautifulSoup(client.get("/settings").text, "html.parser").select_one("#storage-used").get_text()
        assert shown.startswith("Storage used: 0.") and shown.endswith("of 1.0 MB"), shown
        full = client.post("/api/import", content=export_of(2, 50_000), headers=json_type)
        assert full.status_code == 413 and "Your storage is full" in full.json()["detail"]
        listed = client.get("/api/sessions").json()["items"]
        assert len(listed) == 3
        for item in listed:
            if item["title"].startswith("imported"):
                assert client.delete(f"/api/sessions/{item['id']}").status_code == 204
        assert client.post("/api/import", content=export_of(2, 50_000), headers=json_type).status_code == 201
    finally:
        _stop_app(app)


def test_ops_endpoints_can_be_token_protected_and_the_api_key_never_shows(
    limited_app: AppServer, make: Any
) -> None:
    client = make(limited_app)
    assert client.get("/readyz?upstream=1").status_code == 401
    assert client.get("/readyz?upstream=1", headers={"Authorization": "Bearer ops-token-for-tests"}).status_code == 200
    assert client.get("/readyz").status_code == 200
    chat = start_chat(client, headers=new_ip())
    failed = client.get("/chat/stream", params={"user_id": chat["user_id"], "session_id": chat["session_id"],
                                                "message": "fail please [[fail:401]]"})
    seen = failed.text + client.get("/metrics").text + client.get("/", follow_redirects=True).text + limited_app.log()
    assert API_KEY not in seen


@pytest.mark.browser
@pytest.mark.parametrize("javascript", [False, True])
def test_sign_up_and_chat_in_chromium(browser: Any, accounts_app: AppServer, javascript: bool) -> None:
    context = browser.new_context(base_url=accounts_app.base_url, java_script_enabled=javascript,
                                  extra_http_headers={"Accept-Language": "en-US,en", **new_ip()})
    csp_reports: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda message: "Content Security Policy" in message.text
                and csp_reports.append(message.text))
        page.goto("/")
        assert page.url.endswith("/login?next=/")
        page.click("text=Create an account")
        page.fill("#username", unique("web")[:30])
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{accounts_app.base_url}/")  # an empty chat, stored nowhere until the first send
        page.fill("#composer-input", "hello from a signed-in browser")
        if javascript:
            page.press("#composer-input", "Enter")
            page.wait_for_selector(".msg--assistant:not(.msg--streaming) >> nth=1", timeout=15_000)
        else:
            page.click(".round-btn--send")
            page.wait_for_selector(".msg--user", timeout=15_000)
        page.wait_for_url("**/c/*")
        assert "hello from a signed-in browser" in page.inner_text("#message-list")
        page.click("text=Sign out")
        page.wait_for_url("**/login")
    finally:
        context.close()
    assert csp_reports == []


@pytest.mark.browser
def test_an_open_page_says_so_when_its_sign_in_ends_elsewhere(browser: Any, accounts_app: AppServer,
                                                              make: Any) -> None:
    """The page's channel (htmx's SSE extension) shows the last event of a revoked stream and closes:
    a conversation open in Chromium, "sign out everywhere" from another device."""
    context = browser.new_context(base_url=accounts_app.base_url, extra_http_headers={"Accept-Language": "en-US,en",
                                                                                        **new_ip()})
    try:
        page = context.new_page()
        page.goto("/signup")
        username = unique("tab")[:30]
        page.fill("#username", username)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{accounts_app.base_url}/")
        page.fill("#composer-input", "hello before the sign-out")
        page.press("#composer-input", "Enter")
        page.wait_for_selector(".msg--assistant:not(.msg--streaming) >> nth=1", timeout=15_000)
        page.wait_for_url("**/c/*")
        page.wait_for_timeout(500)  # (the channel is open once the page has settled)
        other = make(accounts_app)
        assert other.post("/login", data={"username": username, "password": PASSWORD}).status_code == 303
        began = time.monotonic()
        assert other.post("/logout", data={"everywhere": "1", "csrf_token": page_token_of(other)}).status_code == 303
        page.wait_for_selector("#signed-out", timeout=3_000)
        assert time.monotonic() - began < 3
        assert "signed out or revoked" in page.inner_text("#signed-out")
        assert page.get_attribute("#signed-out a", "href") == "/login"
    finally:
        context.close()


def test_page_forms_of_a_signed_in_user_need_that_sign_ins_token(accounts_app: AppServer, make: Any) -> None:
    client, other = make(accounts_app), make(accounts_app)
    sign_up(client, **new_ip())
    sign_up(other, **new_ip())
    session_id = create_session(client)["id"]
    mine, theirs = page_token_of(client), page_token_of(other)
    assert mine != theirs
    for token in ("", theirs):
        refused = client.post(f"/c/{session_id}/title", data={"title": "forged", "csrf_token": token})
        assert refused.status_code == 403
    assert client.post(f"/c/{session_id}/title", data={"title": "mine", "csrf_token": mine}).status_code == 303
    assert client.get(f"/api/sessions/{session_id}").json()["title"] == "mine"


def test_a_token_of_an_anonymous_identity_is_no_key_to_an_accounts_instance(
    app_server: AppServer, accounts_app: AppServer, make: Any,
) -> None:
    anonymous = make(app_server)
    create_session(anonymous)
    token = anonymous.post("/api/tokens", json={}).json()["token"]
    assert make(app_server, headers={"Authorization": f"Bearer {token}"}).get("/api/sessions").status_code == 200
    assert make(accounts_app, headers={"Authorization": f"Bearer {token}"}).get("/api/sessions").status_code == 401


def test_proxy_mode_refuses_to_trust_every_address(tmp_path: Any) -> None:
    env = {**os.environ, "AUTH": "proxy", "FORWARDED_ALLOW_IPS": "*", "DATA_DIR": str(tmp_path),
           "SECRET_KEY": TEST_SECRET_KEY, "REDIS_URL": "redis://127.0.0.1:1"}
    started = subprocess.run([sys.executable, "-m", "webapp"], capture_output=True, text=True, cwd=REPO_ROOT,
                             env=env, timeout=60)
    assert started.returncode == 2 and "FORWARDED_ALLOW_IPS" in started.stderr
