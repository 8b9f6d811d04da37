"""The admin page through real app processes (AUTH=accounts, ADMIN_USERS): 403 for everyone else, the
directory paged and searched, disable ending an open stream on another host within 2 s, budgets,
password resets, deleting a user with all their data, the audit list, CSRF and hostile input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from bs4 import BeautifulSoup

from tests.conftest import AppServer, RedisServer, _stop_app, all_keys, create_session, post_turn, unique
from tests.fake_upstream import ThreadedFakeUpstream
from tests.test_accounts import (
    ACCOUNTS_SETTINGS,
    PASSWORD,
    SLOW,
    OpenStream,
    new_ip,
    page_token_of,
    sign_up,
    start,
)

ADMIN = "chief_" + unique("a")[-6:]
EN = {"Accept-Language": "en"}


@pytest.fixture(scope="module")
def admin_hosts(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, AppServer]]:
    settings = {**ACCOUNTS_SETTINGS, "SIGNUPS_PER_IP_PER_HOUR": "0", "ADMIN_USERS": f"{ADMIN},someone_else"}
    a = start(redis_server, upstream, tmp_path_factory, **settings)
    b = start(redis_server, upstream, tmp_path_factory, **settings)
    yield a, b
    _stop_app(a)
    _stop_app(b)


@pytest.fixture
def clients() -> Iterator[Any]:
    made: list[httpx.Client] = []

    def make(app: AppServer, **options: Any) -> httpx.Client:
        options["headers"] = {**EN, **options.get("headers", {})}
        client = httpx.Client(base_url=app.base_url, timeout=30, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def admin_client(app: AppServer, clients: Any) -> httpx.Client:
    client = clients(app)
    login = client.post("/login", data={"username": ADMIN, "password": PASSWORD})
    if login.status_code != 303:  # (an ADMIN_USERS name is made by the operator: sign-up refuses it)
        app.create_user(ADMIN, PASSWORD)
        assert client.post("/login", data={"username": ADMIN, "password": PASSWORD}).status_code == 303
    return client


def uid_of(admin: httpx.Client, username: str) -> str:
    found = admin.get("/api/admin/users", params={"q": username}).json()["users"]
    return next(user["id"] for user in found if user["username"] == username)


def form(client: httpx.Client, path: str, **data: str) -> httpx.Response:
    return client.post(path, data={"csrf_token": page_token_of(client), **data})


def test_admin_routes_answer_403_to_everyone_else(admin_hosts: tuple[AppServer, AppServer], clients: Any,
                                                  client: httpx.Client) -> None:
    a, _ = admin_hosts
    admin = admin_client(a, clients)
    plain = clients(a)
    name = sign_up(plain)
    target = uid_of(admin, name)
    for method, path in [("GET", "/admin"), ("GET", "/api/admin/users"), ("POST", f"/admin/users/{target}/disable"),
                         ("POST", f"/admin/users/{target}/delete"), ("POST", f"/admin/users/{'a_' + '0' * 24}/enable"),
                         ("PUT", f"/api/admin/users/{target}/budget")]:
        if method == "POST":
            answer = form(plain, path, confirm=name)
        elif method == "PUT":
            answer = plain.put(path, json={"tokens": 5})
        else:
            answer = plain.get(path)
        assert answer.status_code == 403, (method, path, answer.status_code)
    assert uid_of(admin, name) == target  # nothing happened to them
    assert client.get("/admin").status_code == 403  # anonymous mode: no admins at all
    settings_page = BeautifulSoup(admin.get("/settings").text, "html.parser")
    assert settings_page.select_one("#admin-link") is not None
    assert BeautifulSoup(plain.get("/settings").text, "html.parser").select_one("#admin-link") is None


def test_admin_actions_need_the_page_token_and_refuse_hostile_input(admin_hosts: tuple[AppServer, AppServer],
                                                                     clients: Any) -> None:
    a, _ = admin_hosts
    admin = admin_client(a, clients)
    name = sign_up(clients(a))
    target = uid_of(admin, name)
    assert admin.post(f"/admin/users/{target}/disable", data={}).status_code == 403  # no CSRF token
    assert admin.post(f"/admin/users/{target}/disable", headers={"Origin": "https://evil.example"},
                      data={"csrf_token": page_token_of(admin)}).status_code in (403, 400)
    assert form(admin, f"/admin/users/{target}/budget", budget="lots").status_code == 422
    assert form(admin, f"/admin/users/{target}/budget", budget="-5").status_code == 422
    assert form(admin, f"/admin/users/{target}/budget", budget="\u00b2").status_code == 422  # a digit, no number
    assert form(admin, "/admin/users/a_not-an-id/disable").status_code == 422
    assert form(admin, f"/admin/users/{'a_' + 'f' * 24}/disable").status_code == 404
    assert form(admin, f"/admin/users/{target}/delete", confirm="someone").status_code == 422
    assert admin.put(f"/api/admin/users/{target}/budget", json={"tokens": -1}).status_code == 422
    moved = form(admin, f"/admin/users/{target}/budget", budget="1000", back="//evil.example/x")
    assert moved.status_code == 303 and moved.headers["location"] == "/admin"
    page = admin.get("/admin", params={"q": "<script>alert(1)</script>"})
    assert page.status_code == 200 and "<script>alert(1)" not in page.text
    assert admin.get("/admin", params={"page": "0"}).status_code == 422


def test_the_directory_pages_and_searches_and_shows_each_users_figures(
        admin_hosts: tuple[AppServer, AppServer], clients: Any) -> None:
    a, _ = admin_hosts
    admin = admin_client(a, clients)
    stem = unique("dir")[-8:]
    names = [f"{stem}_{n}" for n in range(3)]
    for name in names:
        user = clients(a)
        sign_up(user, name)
    active = clients(a)
    assert active.post("/login", data={"username": names[0], "password": PASSWORD}).status_code == 303
    sid = create_session(active)["id"]
    posted = post_turn(active, sid, unique("hello"))
    assert posted.status_code == 202
    with active.stream("GET", posted.json()["events_url"]) as events:
        events.read()
    found = admin.get("/api/admin/users", params={"q": stem}).json()
    assert found["total"] == 3 and sorted(u["username"] for u in found["users"]) == names
    first = next(u for u in found["users"] if u["username"] == names[0])
    assert first["conversations"] == 1 and first["tokens_this_month"] > 0 and first["last_active"] > 0
    assert admin.get("/api/admin/users", params={"q": stem + "_1"}).json()["total"] == 1
    page = BeautifulSoup(admin.get("/admin", params={"q": stem}).text, "html.parser")
    rows = page.select("#admin-users tbody tr[data-username]")
    assert sorted(row["data-username"] for row in rows) == names
    newest = admin.get("/api/admin/users").json()
    assert newest["users"][0]["created"] >= newest["users"][-1]["created"]


def test_disabling_a_user_ends_their_stream_on_another_host_and_their_sign_ins(
        admin_hosts: tuple[AppServer, AppServer], clients: Any) -> None:
    a, b = admin_hosts
    admin = admin_client(a, clients)
    user = clients(b)
    name = sign_up(user, **new_ip())
    token = user.post("/api/tokens", json={"name": "script"}).json()["token"]
    sid = create_session(user)["id"]
    posted = user.post(f"/api/sessions/{sid}/turns", json={"message": f"{unique('slow')} {SLOW}"})
    assert posted.status_code == 202
    stream = OpenStream(b, posted.json()["events_url"], cookies=user.cookies)
    assert stream.status == 200
    time.sleep(0.3)
    moment = time.monotonic()
    assert form(admin, f"/admin/users/{uid_of(admin, name)}/disable").status_code == 303  # on host A
    seconds, last = stream.farewell_after(moment)
    assert seconds < 2.0, seconds
    assert last.data["type"] == "error" and last.data["code"] == "revoked"
    assert user.get("/api/sessions").status_code == 401
    assert clients(b, headers={"Authorization": f"Bearer {token}"}).get("/api/sessions").status_code == 401
    again = clients(a).post("/login", data={"username": name, "password": PASSWORD})
    assert again.status_code == 403 and "disabled" in again.text
    assert form(admin, f"/admin/users/{uid_of(admin, name)}/enable").status_code == 303
    assert clients(a).post("/login", data={"username": name, "password": PASSWORD}).status_code == 303
    audit = BeautifulSoup(admin.get("/admin").text, "html.parser").select_one("#admin-audit").get_text()
    assert f"{ADMIN} · disabled · {name}" in audit and f"{ADMIN} · enabled · {name}" in audit


def test_a_budget_set_by_an_admin_refuses_the_users_next_turn(admin_hosts: tuple[AppServer, AppServer],
                                                              clients: Any) -> None:
    a, b = admin_hosts
    admin = admin_client(a, clients)
    user = clients(b)
    name = sign_up(user, **new_ip())
    sid = create_session(user)["id"]
    assert admin.put(f"/api/admin/users/{uid_of(admin, name)}/budget", json={"tokens": 1}).status_code == 204
    posted = post_turn(user, sid, "first")
    assert posted.status_code == 202  # nothing spent yet: it runs (and crosses the budget)
    with user.stream("GET", posted.json()["events_url"]) as events:
        events.read()
    refused = post_turn(user, sid, "second")
    assert refused.status_code == 429 and "budget" in refused.json()["detail"]
    assert user.get("/api/usage").json()["budget"] == 1
    assert form(admin, f"/admin/users/{uid_of(admin, name)}/budget", budget="").status_code == 303  # default
    assert post_turn(user, sid, "third").status_code == 202


def test_a_password_reset_is_shown_once_and_ends_the_old_one(admin_hosts: tuple[AppServer, AppServer],
                                                             clients: Any) -> None:
    a, _ = admin_hosts
    admin = admin_client(a, clients)
    user = clients(a)
    name = sign_up(user, **new_ip())
    reset = form(admin, f"/admin/users/{uid_of(admin, name)}/password")
    assert reset.status_code == 200
    password = BeautifulSoup(reset.text, "html.parser").select_one("#new-password").get_text()
    assert password not in admin.get("/admin").text
    assert user.get("/api/sessions").status_code == 401  # signed out
    assert clients(a).post("/login", data={"username": name, "password": PASSWORD}).status_code == 401
    assert clients(a).post("/login", data={"username": name, "password": password}).status_code == 303


def test_deleting_a_user_removes_all_their_data(admin_hosts: tuple[AppServer, AppServer], clients: Any,
                                                redis_client: redis.Redis) -> None:
    a, _ = admin_hosts
    admin = admin_client(a, clients)
    user = clients(a)
    name = sign_up(user, **new_ip())
    uid = uid_of(admin, name)
    user.post("/api/tokens", json={"name": "t"})
    user.post("/api/roles", json={"name": "Critic", "system_prompt": "Be brief."})
    for _ in range(2):
        sid = create_session(user)["id"]
        posted = post_turn(user, sid, f"{unique('gone')} searchable words")
        with user.stream("GET", posted.json()["events_url"]) as events:
            events.read()
    user.post(f"/api/sessions/{sid}/share")
    assert form(admin, f"/admin/users/{uid}/delete", confirm=name.upper()).status_code == 303
    r = redis_client
    left = all_keys(r, f"*{{{uid}}}*")
    lasting = [key for key in left if r.ttl(key) < 0 or r.ttl(key) > 86400]
    assert lasting == [], lasting  # only a turn's state and pointers, which expire within a day
    assert r.get(f"chat:account:name:{name.lower()}") is None
    assert admin.get("/api/admin/users", params={"q": name}).json()["total"] == 0
    assert clients(a).post("/login", data={"username": name, "password": PASSWORD}).status_code == 401
    assert "deleted" in BeautifulSoup(admin.get("/admin").text, "html.parser").select_one("#admin-audit").get_text()


def test_an_admin_name_can_be_neither_signed_up_for_nor_freed_by_a_delete(admin_hosts: tuple[AppServer, AppServer],
                                                                          clients: Any) -> None:
    """ADMIN_USERS lists names: whoever holds one is an admin. Sign-up refuses them (the operator makes them
    with create-user), and another admin cannot delete one (its name, freed, would be anyone's)."""
    a, _ = admin_hosts
    admin = admin_client(a, clients)
    refused = clients(a).post("/signup", data={"username": "Someone_Else", "password": PASSWORD})
    assert refused.status_code == 409 and "ADMIN_USERS" in refused.text
    a.create_user("someone_else", PASSWORD)
    other = uid_of(admin, "someone_else")
    deleting = form(admin, f"/admin/users/{other}/delete", confirm="someone_else")
    assert deleting.status_code == 409 and "ADMIN_USERS" in deleting.text
    assert clients(a).post("/login", data={"username": "someone_else", "password": PASSWORD}).status_code == 303


def test_an_admins_role_published_to_everyone_can_be_picked_not_edited(admin_hosts: tuple[AppServer, AppServer],
                                                                        clients: Any) -> None:
    from tests.conftest import api_turn
    from tests.fake_upstream import parse_whoami

    a, b = admin_hosts
    admin = admin_client(a, clients)
    prompt = f"You answer in the house style {unique('house')}."
    role = admin.post("/api/roles", json={"name": "House <style>", "system_prompt": prompt}).json()
    user = clients(b)
    sign_up(user, **new_ip())
    assert form(user, "/admin/roles/publish", role_id=role["id"]).status_code == 403  # not an admin
    assert form(admin, "/admin/roles/publish", role_id="r_" + "0" * 16).status_code == 404  # not the admin's
    assert form(admin, "/admin/roles/publish", role_id=role["id"]).status_code == 303
    seen = next(r for r in user.get("/api/roles").json() if r["id"] == role["id"])
    assert seen["published"] is True and seen["system_prompt"] == ""  # picked, its prompt not shown
    sid = create_session(user, role=role["id"])["id"]
    turn = api_turn(user, sid, f"{unique('who')} [[whoami]]")
    assert parse_whoami(turn.text)["system"] == prompt
    assert user.patch(f"/api/roles/{role['id']}", json={"name": "Mine now"}).status_code == 404
    assert user.delete(f"/api/roles/{role['id']}").status_code == 404
    assert "House &lt;style&gt;" in admin.get("/admin").text
    assert form(admin, f"/admin/roles/{role['id']}/unpublish").status_code == 303
    assert role["id"] not in [r["id"] for r in user.get("/api/roles").json()]
    assert parse_whoami(api_turn(user, sid, f"{unique('who')} [[whoami]]").text)["system"] != prompt  # the default
    assert "published the role" in admin.get("/admin").text


@pytest.fixture(scope="module")
def proxy_hosts(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, AppServer]]:
    settings = {"AUTH": "proxy", "FORWARDED_ALLOW_IPS": "127.0.0.1", "ADMIN_USERS": "sso-boss@example.com"}
    a = start(redis_server, upstream, tmp_path_factory, **settings)
    b = start(redis_server, upstream, tmp_path_factory, **settings)
    yield a, b
    _stop_app(a)
    _stop_app(b)


class HeaderStream(OpenStream):
    """An OpenStream whose requests carry `headers` (a trusted proxy's user header)."""

    def __init__(self, app: AppServer, path: str, headers: dict[str, str]) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.client = httpx.Client(base_url=app.base_url, headers=headers, timeout=60)
        self.path, self.params = path, None
        self.status = 0
        self.events = []
        self.ended_at = None
        self.opened = threading.Event()
        self.start()
        assert self.opened.wait(10), f"{path} did not answer"


def test_behind_a_proxy_a_disabled_user_is_refused_and_their_open_stream_ends(
        proxy_hosts: tuple[AppServer, AppServer], clients: Any) -> None:
    a, b = proxy_hosts
    boss = clients(a, headers={"Remote-User": "sso-boss@example.com"})
    name = f"{unique('carol')[-10:]}@example.com"
    carol = clients(b, headers={"Remote-User": name})
    sid = create_session(carol)["id"]
    assert carol.get("/admin").status_code == 403
    posted = carol.post(f"/api/sessions/{sid}/turns", json={"message": f"{unique('slow')} {SLOW}"})
    assert posted.status_code == 202
    stream = HeaderStream(b, posted.json()["events_url"], {"Remote-User": name})
    assert stream.status == 200
    time.sleep(0.3)
    moment = time.monotonic()
    assert form(boss, f"/admin/users/{uid_of(boss, name)}/disable").status_code == 303  # on host A
    seconds, last = stream.farewell_after(moment)
    assert seconds < 2.0, seconds
    assert last.data["type"] == "error" and last.data["code"] == "revoked"
    assert carol.get("/api/sessions").status_code == 403
    assert form(boss, f"/admin/users/{uid_of(boss, name)}/enable").status_code == 303
    assert carol.get("/api/sessions").status_code == 200
