"""Hostile input over real HTTP, table-driven: each row is one request and what it must get.

Two tables. IDOR: user A has conversations (one idle, one with a reply being written, one
deleted and waiting for Undo), turns and an API token; user B, a stranger without a cookie
and a forger of A's cookie try every route with A's ids. Each must be refused (404, 403 for
naming A's user_id, 410 for an Undo that is not theirs, 401 for a made-up bearer token)
without a word of A's titles, messages or token in the answer, and afterwards A's data is
as it was.

Malformed and oversize input: broken, mistyped, huge and deeply nested JSON, text that is
not valid Unicode (lone surrogates, invalid UTF-8 in forms and query strings), NUL, CR/LF
in ids, paths and headers (raw on a socket where the HTTP client refuses to send them),
overlong ids and tokens, malformed cursors, out-of-range numbers, unknown roles, empty
titles. Each must be a 4xx, never a 5xx; valid but odd text (RTL and zero-width
characters, NUL) must be stored exactly as sent. No response may carry an injected
`Set-Cookie: x=1`, and no request may write a line of its own into the app's log.

Every request goes on a connection of its own (`Connection: close`): a server error can
drop a kept-alive connection, and the next row must not fail for it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import (
    AppServer,
    api_turn,
    create_session,
    messages_of,
    post_turn,
    read_events,
    start_chat,
    unique,
)
from tests.fake_upstream import ThreadedFakeUpstream

HX = {"HX-Request": "true"}
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
FOUR_XX = frozenset(range(400, 500))
INJECTED = "x=1"  # the cookie every CR/LF row tries to smuggle into a response header
MAX_CHARS = 1000  # MAX_MESSAGE_CHARS: the app runs with the default
FIVE_MB = 5 * 1024 * 1024
REQUEST_TIMEOUT = 15
B_MARK = unique("intruder")  # in everything user B tries to write: the model must never see it


def only(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


Check = Callable[["Context", httpx.Response], "str | None"]


@dataclass(frozen=True)
class Row:
    """One request. `{name}` in the path, query, form and header values is filled from the
    context's ids; `body` is sent as it is (raw bytes or text the client would refuse to make)."""

    label: str
    method: str
    path: str
    expect: Collection[int] = FOUR_XX
    params: dict[str, str] | None = None
    json: Any = None
    form: dict[str, str] | None = None
    body: bytes | str | None = None
    headers: dict[str, str] | None = None
    who: str = "intruder"  # which client sends it: see Context.client_for
    check: Check | None = None  # what else must hold; returns the problem, or None
    explain: Check | None = None  # when the status is wrong: what the app did instead
    sent: str | None = None  # a secret of A's that B typed itself (a search): echoing it back is no leak


@dataclass
class Context:
    app: AppServer
    ids: dict[str, str]
    clients: dict[str, Callable[[], httpx.Client]]
    secrets: tuple[str, ...] = ()  # text of the victim's that no answer may contain
    owner: httpx.Client | None = None

    def client_for(self, who: str) -> httpx.Client:
        return self.clients[who]()


@dataclass
class Outcome:
    tried: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return self.tried - len(self.failures)

    def record(self, label: str, problem: str | None) -> None:
        self.tried += 1
        if problem:
            self.failures.append(f"{label}: {problem}")

    def report(self, name: str) -> str:
        lines = [f"hostile input, {name}: {self.tried} cases, {self.passed} passed"]
        lines += [f"  FAILED {failure}" for failure in self.failures]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def totals() -> Iterator[list[Outcome]]:
    outcomes: list[Outcome] = []
    yield outcomes
    tried = sum(o.tried for o in outcomes)
    print(f"\nhostile input: {tried} cases, {sum(o.passed for o in outcomes)} passed")


# ---------------------------------------------------------------- sending and judging


def send(ctx: Context, row: Row) -> httpx.Response:
    def fill(value: str) -> str:
        return value.format(**ctx.ids)

    headers = {"Connection": "close", **{k: fill(v) for k, v in (row.headers or {}).items()}}
    content: bytes | str | None = row.body
    if row.json is not None:
        content = json.dumps(row.json)
        headers.setdefault("content-type", "application/json")
    client = ctx.client_for(row.who)
    return client.request(
        row.method, fill(row.path),
        params={k: fill(v) for k, v in row.params.items()} if row.params else None,
        data={k: fill(v) for k, v in row.form.items()} if row.form else None,
        content=content, headers=headers, timeout=REQUEST_TIMEOUT,
    )


def wanted(expect: Collection[int]) -> str:
    others = sorted(set(expect) - FOUR_XX)
    if FOUR_XX <= set(expect):
        return "a 4xx" + "".join(f" or {status}" for status in others)
    return " or ".join(str(status) for status in others)


def injected_headers(response: httpx.Response) -> list[str]:
    """Response headers a CR/LF in the request managed to add."""
    return [f"{name}: {value}" for name, value in response.headers.multi_items()
            if (name.lower() == "set-cookie" and INJECTED in value) or "\r" in value or "\n" in value]


def judge(ctx: Context, row: Row) -> str | None:
    """The problem with how the app answered `row`, or None."""
    path = row.path.format(**ctx.ids)
    request = f"{row.method} {path if len(path) < 200 else path[:120] + f'...({len(path)} chars)'}"
    try:
        response = send(ctx, row)
    except httpx.HTTPError as exc:  # the connection dropped: a server error after the headers
        return f"{request}: no complete answer ({type(exc).__name__}: {exc})"
    snippet = " ".join(response.text[:160].split())
    if response.status_code not in row.expect:
        location = f" Location={response.headers['location']!r}" if "location" in response.headers else ""
        instead = f"; {row.explain(ctx, response)}" if row.explain else ""
        return f"{request}: {response.status_code}, expected {wanted(row.expect)}{location} ({snippet!r}){instead}"
    if injected := injected_headers(response):
        return f"{request}: injected response headers {injected}"
    answer = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
    typed = row.sent.format(**ctx.ids) if row.sent else None
    if leaked := [secret for secret in ctx.secrets if secret != typed and secret in answer]:
        return f"{request}: {response.status_code} leaks {leaked}"
    if typed and (found := [key for key in ("sid", "rsid", "dsid", "tid") if ctx.ids[key] in answer]):
        return f"{request}: {response.status_code} finds A's {found}"
    return row.check(ctx, response) if row.check else None


# ---------------------------------------------------------------- IDOR


@dataclass
class Victim:
    client: httpx.Client
    ids: dict[str, str]
    secrets: tuple[str, ...]


def snapshot(client: httpx.Client, sid: str) -> tuple[Any, ...]:
    """What an intruder could change of a conversation: title, role, count, every message."""
    session = client.get(f"/api/sessions/{sid}")
    assert session.status_code == 200, session.text
    body = session.json()
    messages = [(m["id"], m["role"], m["content"], m["status"]) for m in messages_of(client, sid)["items"]]
    return body["title"], body["role"], body["message_count"], messages


@pytest.fixture
def victim(make_client: Callable[..., httpx.Client]) -> Victim:
    """User A: an idle conversation with a finished turn, one whose reply is still being
    written, and a deleted one waiting for Undo; each titled and written with a secret."""
    client = make_client()
    uid = start_chat(client)["user_id"]
    title, secret = unique("a-title"), unique("a-secret")
    sid = create_session(client)["id"]
    assert client.patch(f"/api/sessions/{sid}", json={"title": title}).status_code == 200
    tid = api_turn(client, sid, f"{secret} my private question").turn_id
    # a file sent with a turn of `sid`, and one uploaded and not sent yet
    sent_file, pending = (client.post("/api/files", files=[("files", (name, f"{secret} {name}".encode(), "text/plain"))])
                          .json()[0]["id"] for name in ("sent.txt", "pending.txt"))
    with_file = client.post(f"/api/sessions/{sid}/turns", json={"message": f"{secret} see", "attachments": [sent_file]})
    assert with_file.status_code == 202, with_file.text
    read_events(client, with_file.json()["events_url"])
    tid = with_file.json()["turn_id"]

    running_secret = unique("a-running")
    rsid = create_session(client)["id"]
    started = post_turn(client, rsid, f"{running_secret} [[tokens:80]] [[delay:25]]")  # ~2 s of reply
    assert started.status_code == 202, started.text

    token_name = unique("a-token")
    created = client.post("/api/tokens", json={"name": token_name})
    assert created.status_code == 201, created.text
    token = created.json()

    role_name, role_prompt = unique("a-role"), unique("a-prompt")
    role = client.post("/api/roles", json={"name": role_name, "system_prompt": role_prompt})
    assert role.status_code == 201, role.text
    shared = client.post(f"/api/sessions/{sid}/share")
    assert shared.status_code == 201, shared.text

    deleted_title = unique("a-deleted")
    dsid = create_session(client)["id"]
    assert client.patch(f"/api/sessions/{dsid}", json={"title": deleted_title}).status_code == 200
    assert client.post(f"/c/{dsid}/delete").status_code == 303

    ids = {"uid": uid, "sid": sid, "tid": tid, "rsid": rsid, "rtid": started.json()["turn_id"], "dsid": dsid,
           "title": title, "secret": secret, "tokid": token["id"], "token": token["token"],
           "rid": role.json()["id"], "share": shared.json()["token"], "fid": sent_file, "pfid": pending}
    return Victim(client, ids, (title, secret, running_secret, deleted_title, token_name, token["token"],
                                role_name, role_prompt, shared.json()["token"]))


def web_rows() -> list[Row]:
    """Every web UI route under /c/{id}, as a plain request and as htmx sends it."""
    routes = [
        Row("page", "GET", "/c/{sid}", only(404)),
        Row("page, older messages", "GET", "/c/{sid}", only(404), params={"before": "1"}),
        Row("older messages", "GET", "/c/{sid}/messages", only(404), params={"before": "5"}),
        Row("sidebar item", "GET", "/c/{sid}/item", only(404)),
        Row("rename form", "GET", "/c/{sid}/title/edit", only(404)),
        Row("send a message", "POST", "/c/{sid}/messages", only(404), form={"message": f"{B_MARK} here"}),
        Row("send to the running one", "POST", "/c/{rsid}/messages", only(404), form={"message": f"{B_MARK} here"}),
        Row("stop the running reply", "POST", "/c/{rsid}/stop", only(404)),
        Row("stop", "POST", "/c/{sid}/stop", only(404)),
        Row("switch role", "POST", "/c/{sid}/role", only(404), form={"role": "teacher"}),
        Row("rename", "POST", "/c/{sid}/title", only(404), form={"title": f"renamed by {B_MARK}"}),
        Row("delete", "POST", "/c/{sid}/delete", only(404)),
        Row("delete the running one", "POST", "/c/{rsid}/delete", only(404)),
        Row("undo A's delete", "POST", "/c/{dsid}/restore", only(410)),
        Row("undo on a live conversation", "POST", "/c/{sid}/restore", only(410)),
        Row("follow A's finished turn", "GET", "/c/{sid}/turns/{tid}/events", only(404)),
        Row("follow A's running turn", "GET", "/c/{rsid}/turns/{rtid}/events", only(404)),
        Row("revoke A's API token", "POST", "/settings/tokens/{tokid}/revoke", only(404)),
        Row("switch model", "POST", "/c/{sid}/model", only(404), form={"model": "fake-model-large"}),
        Row("share page", "GET", "/c/{sid}/share", only(404)),
        Row("create a link", "POST", "/c/{sid}/share", only(404)),
        Row("revoke A's link", "POST", "/c/{sid}/share/revoke", only(404)),
        Row("edit A's role", "POST", "/roles/{rid}", only(404),
            form={"name": "mine now", "system_prompt": f"{B_MARK} prompt"}),
        Row("delete A's role", "POST", "/roles/{rid}/delete", only(404)),
    ]
    rows = []
    for row in routes:
        rows.append(Row(f"web: {row.label}", row.method, row.path, row.expect, params=row.params, form=row.form))
        rows.append(Row(f"web (htmx): {row.label}", row.method, row.path, row.expect, params=row.params,
                        form=row.form, headers=HX))
    return rows


IDOR_ROWS = [
    # the resource API
    Row("api: read", "GET", "/api/sessions/{sid}", only(404)),
    Row("api: rename", "PATCH", "/api/sessions/{sid}", only(404), json={"title": "mine now"}),
    Row("api: switch role", "PATCH", "/api/sessions/{sid}", only(404), json={"role": "programmer"}),
    Row("api: delete", "DELETE", "/api/sessions/{sid}", only(404)),
    Row("api: delete the running one", "DELETE", "/api/sessions/{rsid}", only(404)),
    Row("api: read the deleted one", "GET", "/api/sessions/{dsid}", only(404)),
    Row("api: messages", "GET", "/api/sessions/{sid}/messages", only(404)),
    Row("api: messages, a page", "GET", "/api/sessions/{sid}/messages", only(404),
        params={"before": "2", "limit": "1"}),
    Row("api: start a turn", "POST", "/api/sessions/{sid}/turns", only(404), json={"message": f"{B_MARK} turn"}),
    Row("api: start a turn in the running one", "POST", "/api/sessions/{rsid}/turns", only(404),
        json={"message": f"{B_MARK} turn"}),
    Row("api: follow a finished turn", "GET", "/api/turns/{tid}/events", only(404)),
    Row("api: follow a finished turn, resuming", "GET", "/api/turns/{tid}/events", only(404),
        headers={"Last-Event-ID": "{tid}:0"}),
    Row("api: follow a running turn", "GET", "/api/turns/{rtid}/events", only(404), params={"after": "0"}),
    Row("api: cancel a finished turn", "POST", "/api/turns/{tid}/cancel", only(404)),
    Row("api: cancel the running turn", "POST", "/api/turns/{rtid}/cancel", only(404)),
    Row("api: revoke A's API token", "DELETE", "/api/tokens/{tokid}", only(404)),
    Row("api: list API tokens", "GET", "/api/tokens", only(200)),
    Row("api: read A's role", "GET", "/api/roles/{rid}", only(404)),
    Row("api: edit A's role", "PATCH", "/api/roles/{rid}", only(404), json={"system_prompt": f"{B_MARK} prompt"}),
    Row("api: delete A's role", "DELETE", "/api/roles/{rid}", only(404)),
    Row("api: list roles (B's own and the built-in)", "GET", "/api/roles", only(200)),
    Row("api: a conversation with A's role", "POST", "/api/sessions", only(400), json={"role": "{rid}"}),
    Row("api: switch to A's role", "PATCH", "/api/sessions/{bsid}", only(400), json={"role": "{rid}"}),
    Row("api: a turn with A's role", "POST", "/api/sessions/{bsid}/turns", only(400),
        json={"message": f"{B_MARK} turn", "role": "{rid}"}),
    Row("api: A's link state", "GET", "/api/sessions/{sid}/share", only(404)),
    Row("api: create a link to A's", "POST", "/api/sessions/{sid}/share", only(404)),
    Row("api: revoke A's link", "DELETE", "/api/sessions/{sid}/share", only(404)),
    Row("api: export A's as Markdown", "GET", "/api/sessions/{sid}/export.md", only(404)),
    Row("api: export A's as JSON", "GET", "/api/sessions/{sid}/export.json", only(404)),
    Row("api: export all (B's own)", "GET", "/api/export", only(200)),
    Row("api: switch A's model", "PATCH", "/api/sessions/{sid}", only(404), json={"model": "fake-model-large"}),
    Row("web: roles page (B's own)", "GET", "/roles", only(200)),
    Row("web: A's file", "GET", "/c/{sid}/files/{fid}", only(404)),
    Row("web: A's file through B's own conversation", "GET", "/c/{bsid}/files/{fid}", only(404)),
    Row("web: A's unsent upload through B's own conversation", "GET", "/c/{bsid}/files/{pfid}", only(404)),
    Row("api: discard A's upload", "DELETE", "/api/files/{pfid}", only(404)),
    Row("web: A's file through A's link, naming B's conversation", "GET", "/s/{share}/files/{pfid}", only(404)),
    Row("api: A's token id as a bearer token", "GET", "/api/sessions/{sid}", only(401),
        headers={"Authorization": "Bearer {tokid}"}),
    Row("web: settings page lists tokens", "GET", "/settings", only(200)),
    Row("api: search for A's message", "GET", "/api/sessions", only(200), params={"q": "{secret}"}, sent="{secret}"),
    Row("api: search for A's title", "GET", "/api/sessions", only(200), params={"q": "{title}"}, sent="{title}"),
    # the seed API, naming A's conversation, then A's user_id
    Row("seed: history", "GET", "/chat/history", only(404), params={"session_id": "{sid}"}),
    Row("seed: history with B's user_id", "GET", "/chat/history", only(404),
        params={"session_id": "{sid}", "user_id": "{buid}"}),
    Row("seed: history with A's user_id", "GET", "/chat/history", only(403),
        params={"session_id": "{sid}", "user_id": "{uid}"}),
    Row("seed: stream", "GET", "/chat/stream", only(404), params={"session_id": "{sid}", "message": B_MARK}),
    Row("seed: stream into the running one", "GET", "/chat/stream", only(404),
        params={"session_id": "{rsid}", "message": B_MARK}),
    Row("seed: stream with A's user_id", "GET", "/chat/stream", only(403),
        params={"session_id": "{sid}", "user_id": "{uid}", "message": B_MARK}),
    Row("seed: resume A's turn in A's conversation", "GET", "/chat/stream", only(404),
        params={"session_id": "{sid}"}, headers={"Last-Event-ID": "{tid}:0"}),
    Row("seed: resume A's turn through B's own conversation", "GET", "/chat/stream", only(204),
        params={"session_id": "{bsid}"}, headers={"Last-Event-ID": "{tid}:0"}),
    Row("seed: resume A's running turn through B's own conversation", "GET", "/chat/stream", only(204),
        params={"session_id": "{bsid}"}, headers={"Last-Event-ID": "{rtid}:0"}),
    Row("seed: start as A's user_id", "POST", "/chat/start", only(403), params={"user_id": "{uid}"}),
    # no cookie, naming A's user_id (a claimed id is never handed out again)
    Row("stranger: claim A's user_id", "POST", "/chat/start", only(403), params={"user_id": "{uid}"}, who="stranger"),
    Row("stranger: history as A", "GET", "/chat/history", only(403),
        params={"session_id": "{sid}", "user_id": "{uid}"}, who="stranger"),
    Row("stranger: stream as A", "GET", "/chat/stream", only(403),
        params={"session_id": "{sid}", "user_id": "{uid}", "message": B_MARK}, who="stranger"),
    # A's user_id as an unsigned cookie, and with a made-up signature
    Row("forger: read", "GET", "/api/sessions/{sid}", only(404), who="forger"),
    Row("forger: list", "GET", "/api/sessions", only(200), who="forger"),
    Row("forger: history as A", "GET", "/chat/history", only(403),
        params={"session_id": "{sid}", "user_id": "{uid}"}, who="forger"),
    Row("forger: page", "GET", "/c/{sid}", only(404), who="forger"),
    Row("forger (bad signature): read", "GET", "/api/sessions/{sid}", only(404), who="bad_signature"),
    Row("forger (bad signature): messages", "GET", "/api/sessions/{sid}/messages", only(404), who="bad_signature"),
    *web_rows(),
    # B's own pages, pointed at A's things
    Row("web: A's turn on B's own conversation", "GET", "/c/{bsid}/turns/{tid}/events", only(200)),
    Row("web: A's running turn on B's own conversation", "GET", "/c/{bsid}/turns/{rtid}/events", only(200)),
    Row("web: B's page offering Undo of A's deleted one", "GET", "/c/{bsid}", only(200), params={"deleted": "{dsid}"}),
    Row("web: B's item while 'on' A's page", "GET", "/c/{bsid}/item", only(200),
        headers={**HX, "HX-Current-URL": "http://testserver/c/{sid}"}),
    Row("web: search for A's message", "GET", "/sidebar", only(200), params={"q": "{secret}"}, headers=HX,
        sent="{secret}"),
    Row("web: search for A's title", "GET", "/sidebar", only(200), params={"q": "{title}"}, headers=HX,
        sent="{title}"),
    Row("web: search for A's message, whole page", "GET", "/c/{bsid}", only(200), params={"q": "{secret}"},
        sent="{secret}"),
]


def test_another_users_ids_get_nothing_on_any_route(
    victim: Victim, make_client: Callable[..., httpx.Client], app_server: AppServer,
    upstream: ThreadedFakeUpstream, totals: list[Outcome],
) -> None:
    intruder = make_client()
    b_chat = start_chat(intruder)
    ids = {**victim.ids, "buid": b_chat["user_id"], "bsid": b_chat["session_id"]}
    before = snapshot(victim.client, ids["sid"])
    signature = victim.client.cookies["chat_uid"].rpartition(".")[2]
    clients: dict[str, Callable[[], httpx.Client]] = {
        "intruder": lambda: intruder,
        "stranger": lambda: make_client(),
        "forger": lambda: make_client(cookies={"chat_uid": ids["uid"]}),
        "bad_signature": lambda: make_client(cookies={"chat_uid": f"{ids['uid']}.{signature[::-1]}"}),
    }
    ctx = Context(app_server, ids, clients, secrets=victim.secrets)
    outcome = Outcome()
    totals.append(outcome)
    for row in IDOR_ROWS:
        outcome.record(f"IDOR {row.label}", judge(ctx, row))

    # afterwards A's data is as it was
    owner = victim.client
    after = snapshot(owner, ids["sid"])
    outcome.record("A's idle conversation unchanged", None if after == before else f"{before} became {after}")
    running = read_events(owner, f"/api/turns/{ids['rtid']}/events")
    reply = messages_of(owner, ids["rsid"])["items"][-1]
    outcome.record("A's running reply finished, not stopped", None if running.ended and reply["status"] == "complete"
                   else f"ended={running.ended}, saved with status {reply['status']!r}")
    restore = owner.post(f"/c/{ids['dsid']}/restore")
    restored = owner.get(f"/api/sessions/{ids['dsid']}")
    outcome.record("A can still undo A's delete", None if restore.status_code == 303 and restored.status_code == 200
                   and restored.json()["title"] == victim.secrets[3]
                   else f"restore {restore.status_code}, then {restored.status_code} {restored.text[:120]!r}")
    by_token = httpx.get(f"{app_server.base_url}/api/sessions/{ids['sid']}",
                         headers={"Authorization": f"Bearer {ids['token']}"}, timeout=REQUEST_TIMEOUT)
    outcome.record("A's API token still works", None if by_token.status_code == 200
                   else f"{by_token.status_code} {by_token.text[:120]!r}")
    listed = {item["id"] for item in owner.get("/api/sessions").json()["items"]}
    outcome.record("A's conversations all still listed", None if {ids["sid"], ids["rsid"], ids["dsid"]} <= listed
                   else f"missing {({ids['sid'], ids['rsid'], ids['dsid']} - listed)}")
    sent = upstream.chat_requests(B_MARK)
    outcome.record("nothing B wrote reached the model", None if not sent else f"{len(sent)} requests carried it")

    print("\n" + outcome.report("IDOR"))
    assert not outcome.failures, outcome.report("IDOR")


# ---------------------------------------------------------------- malformed and oversize input


def stored_message(text: str) -> Check:
    """An accepted message is stored exactly as sent (a refusal is fine too)."""

    def check(ctx: Context, response: httpx.Response) -> str | None:
        if response.status_code >= 400:
            return None
        assert ctx.owner is not None
        items = messages_of(ctx.owner, ctx.ids["sid"])["items"]
        users = [m["content"] for m in items if m["role"] == "user"]
        return None if text in users else f"accepted, but stored as {users!r} (sent {text!r})"

    return check


def stored_title(text: str) -> Check:
    """An accepted title is stored exactly as sent (a refusal is fine too)."""

    def check(ctx: Context, response: httpx.Response) -> str | None:
        if response.status_code >= 400:
            return None
        assert ctx.owner is not None
        title = ctx.owner.get(f"/api/sessions/{ctx.ids['sid']}").json()["title"]
        return None if title == text else f"accepted, but stored as {title!r} (sent {text!r})"

    return check


def what_was_stored(ctx: Context, response: httpx.Response) -> str:
    assert ctx.owner is not None
    users = [m["content"] for m in messages_of(ctx.owner, ctx.ids["sid"])["items"] if m["role"] == "user"]
    title = ctx.owner.get(f"/api/sessions/{ctx.ids['sid']}").json()["title"]
    return f"stored: title {title!r}, user messages {users!r}"


def redirects_home(ctx: Context, response: httpx.Response) -> str | None:
    location = response.headers.get("location", "")
    return None if location == "/" else f"redirected to {location!r}"


def location_is_local(ctx: Context, response: httpx.Response) -> str | None:
    location = response.headers.get("location", "")
    return None if location.startswith("/") and "\r" not in location and "\n" not in location \
        else f"redirected to {location!r}"


RTL = "שלום \u202eevil.exe\u202c \u2066isolated\u2069 zero\u200bwidth\u200c\u200djoin\ufeff end"
RTL_TITLE = "\u202eeltit\u200b\u200d\u2067RTL\u2069"
NUL = "before\x00after"
# a whole access-log line, as one path segment (no "/": Starlette routes on the decoded path)
FORGED_LOG = "2000-01-01 00:00:00,000 INFO webapp.access: method=GET path=forged-{mark} status=200"
FORGED_PATH = FORGED_LOG.replace(" ", "%20")
HUGE = "a" * FIVE_MB
DEEP = 100_000  # levels of nesting: far past any parser's recursion limit

MALFORMED_ROWS = [
    # JSON that does not parse
    Row("JSON: truncated", "POST", "/api/sessions", body='{"role":', headers=JSON),
    Row("JSON: not JSON at all", "POST", "/api/sessions/{sid}/turns", body="not json", headers=JSON),
    Row("JSON: unterminated string", "PATCH", "/api/sessions/{sid}", body='{"title": "x', headers=JSON),
    Row("JSON: trailing garbage", "POST", "/api/sessions/{sid}/turns", body='{"message": "hi"} trailing', headers=JSON),
    Row("JSON: single quotes", "POST", "/api/sessions/{sid}/turns", body="{'message': 'hi'}", headers=JSON),
    Row("JSON: NaN", "PATCH", "/api/sessions/{sid}", body='{"title": NaN}', headers=JSON),
    Row("JSON: empty body", "POST", "/api/sessions/{sid}/turns", body="", headers=JSON),
    Row("JSON: invalid UTF-8 bytes", "POST", "/api/sessions/{sid}/turns", body=b'{"message": "\xff\xfe"}',
        headers=JSON),
    Row("JSON: form-encoded body to a JSON route", "POST", "/api/sessions/{sid}/turns", form={"message": "hi"}),
    Row("JSON: JSON sent as text/plain", "POST", "/api/sessions/{sid}/turns", body='{"message": "hi"}',
        headers={"content-type": "text/plain"}),
    # JSON of the wrong shape
    Row("JSON: a list", "POST", "/api/sessions/{sid}/turns", body="[]", headers=JSON),
    Row("JSON: null", "POST", "/api/sessions/{sid}/turns", body="null", headers=JSON),
    Row("JSON: a bare string", "POST", "/api/sessions/{sid}/turns", body='"hi"', headers=JSON),
    Row("JSON: no message", "POST", "/api/sessions/{sid}/turns", json={}),
    Row("type: message is a number", "POST", "/api/sessions/{sid}/turns", json={"message": 5}),
    Row("type: message is true", "POST", "/api/sessions/{sid}/turns", json={"message": True}),
    Row("type: message is null", "POST", "/api/sessions/{sid}/turns", body='{"message": null}', headers=JSON),
    Row("type: message is a list", "POST", "/api/sessions/{sid}/turns", json={"message": ["hi"]}),
    Row("type: message is an operator object", "POST", "/api/sessions/{sid}/turns", json={"message": {"$gt": ""}}),
    Row("type: role is a number", "POST", "/api/sessions/{sid}/turns", json={"message": "hi", "role": 5}),
    Row("type: title is a number", "PATCH", "/api/sessions/{sid}", json={"title": 5}),
    Row("type: title is a list", "POST", "/api/sessions", json={"title": ["a"]}),
    Row("type: role is a list", "POST", "/api/sessions", json={"role": ["assistant"]}),
    # too big, too deep
    Row("size: message one over the limit", "POST", "/api/sessions/{sid}/turns",
        json={"message": "a" * (MAX_CHARS + 1)}),
    Row("size: message at the limit is accepted", "POST", "/api/sessions/{sid}/turns", only(202),
        json={"message": "a" * MAX_CHARS}),
    Row("size: CJK message over the limit", "POST", "/api/sessions/{sid}/turns",
        json={"message": "字" * (MAX_CHARS + 1)}),
    Row("size: 5 MB message", "POST", "/api/sessions/{sid}/turns", json={"message": HUGE}),
    Row("size: 5 MB title", "POST", "/api/sessions", json={"title": HUGE}),
    Row("size: title of 201 chars", "PATCH", "/api/sessions/{sid}", json={"title": "t" * 201}),
    Row("size: 5 MB body in a field the API ignores", "PATCH", "/api/sessions/{sid}",
        json={"title": "fine", "padding": HUGE}),
    Row("size: 60,000-character message in the seed's query string", "GET", "/chat/stream",
        params={"session_id": "{sid}", "message": "a" * 60_000}),
    Row("size: 5 MB form message", "POST", "/c/{sid}/messages", form={"message": HUGE}),
    Row("depth: nested lists as the message", "POST", "/api/sessions/{sid}/turns",
        body='{"message": ' + "[" * DEEP + "]" * DEEP + "}", headers=JSON),
    Row("depth: nested objects", "PATCH", "/api/sessions/{sid}", body='{"a": ' * DEEP + "1" + "}" * DEEP,
        headers=JSON),
    Row("depth: 500 levels", "POST", "/api/sessions", body='{"title": ' + "[" * 500 + "]" * 500 + "}",
        headers=JSON),
    # text that is not valid Unicode
    Row("unicode: lone high surrogate", "POST", "/api/sessions/{sid}/turns", body='{"message": "\\ud800"}',
        headers=JSON),
    Row("unicode: lone low surrogate inside text", "POST", "/api/sessions/{sid}/turns",
        body='{"message": "a\\udfffb"}', headers=JSON),
    Row("unicode: lone surrogate in a title", "PATCH", "/api/sessions/{sid}", body='{"title": "\\ud800"}',
        headers=JSON),
    Row("unicode: lone surrogate in a new title", "POST", "/api/sessions", body='{"title": "x\\udbff"}', headers=JSON),
    Row("unicode: lone surrogate as the role", "POST", "/api/sessions/{sid}/turns",
        body='{"message": "hi", "role": "\\ud800"}', headers=JSON),
    Row("unicode: escaped surrogate pair is one valid character", "POST", "/api/sessions/{sid}/turns", only(202),
        body='{"message": "\\ud83d\\ude00 ok"}', headers=JSON, check=stored_message("\U0001f600 ok")),
    Row("utf-8: %FF%FE in a form message", "POST", "/c/{sid}/messages", body=b"message=%FF%FEhi", headers=FORM,
        explain=what_was_stored),
    Row("utf-8: raw \\xff\\xfe in a form message", "POST", "/c/{sid}/messages", body=b"message=\xff\xfehi",
        headers=FORM, explain=what_was_stored),
    Row("utf-8: %FF%FE in a form title", "POST", "/c/{sid}/title", body=b"title=%FF%FE", headers=FORM,
        explain=what_was_stored),
    Row("utf-8: encoded surrogate %ED%A0%80 in a form title", "POST", "/c/{sid}/title", body=b"title=%ED%A0%80",
        headers=FORM, explain=what_was_stored),
    Row("utf-8: %FF%FE in the seed's message", "GET", "/chat/stream?session_id={sid}&message=%FF%FEhi",
        explain=what_was_stored),
    Row("utf-8: encoded surrogate in the seed's message", "GET", "/chat/stream?session_id={sid}&message=%ED%A0%80",
        explain=what_was_stored),
    Row("utf-8: %FF%FE as session_id", "GET", "/chat/history?session_id=%FF%FE"),
    Row("utf-8: %FF%FE as user_id", "POST", "/chat/start?user_id=%FF%FE"),
    Row("utf-8: %FF%FE as a cursor", "GET", "/api/sessions?cursor=%FF%FE"),
    Row("utf-8: %FF%FE as an id in the path", "GET", "/api/sessions/%FF%FE"),
    # search only reads: a query that decodes to U+FFFD may be answered, never with a 5xx
    Row("utf-8: %FF%FE as a search", "GET", "/api/sessions?q=%FF%FE", FOUR_XX | {200}),
    Row("utf-8: %FF%FE as a sidebar search", "GET", "/sidebar?q=%FF%FE", FOUR_XX | {200}, headers=HX),
    # valid text that looks odd: accepted and stored exactly
    Row("unicode: RTL, isolates and zero-width in a message", "POST", "/api/sessions/{sid}/turns", only(202),
        json={"message": RTL}, check=stored_message(RTL)),
    Row("unicode: RTL and zero-width in a title", "PATCH", "/api/sessions/{sid}", only(200),
        json={"title": RTL_TITLE}, check=stored_title(RTL_TITLE)),
    Row("unicode: RTL and zero-width in a form message", "POST", "/c/{sid}/messages", only(303),
        form={"message": RTL}, check=stored_message(RTL)),
    Row("unicode: RTL and zero-width in a form title", "POST", "/c/{sid}/title", only(303),
        form={"title": RTL_TITLE}, check=stored_title(RTL_TITLE)),
    Row("unicode: RTL and zero-width in the seed's message", "GET", "/chat/stream", only(200),
        params={"session_id": "{sid}", "message": RTL}, check=stored_message(RTL)),
    Row("unicode: a zero-width space alone is a title", "PATCH", "/api/sessions/{sid}", only(200),
        json={"title": "\u200b"}, check=stored_title("\u200b")),
    # NUL: refused, or kept exactly
    Row("NUL in a message", "POST", "/api/sessions/{sid}/turns", FOUR_XX | {202}, json={"message": NUL},
        check=stored_message(NUL)),
    Row("NUL in a title", "PATCH", "/api/sessions/{sid}", FOUR_XX | {200}, json={"title": NUL},
        check=stored_title(NUL)),
    Row("NUL in a form message", "POST", "/c/{sid}/messages", FOUR_XX | {303}, form={"message": NUL},
        check=stored_message(NUL)),
    Row("NUL in an id", "GET", "/api/sessions/{sid}%00"),
    Row("NUL in a user_id", "POST", "/chat/start?user_id=abc%00def"),
    Row("NUL in a cursor", "GET", "/api/sessions?cursor=1.0_%00"),
    # CR/LF in ids, path segments, redirects and headers
    Row("CRLF: in a session id", "GET", "/api/sessions/abc%0d%0aSet-Cookie:x=1"),
    Row("CRLF: in a session id to PATCH", "PATCH", "/api/sessions/abc%0d%0aSet-Cookie:x=1", json={"title": "t"}),
    Row("CRLF: in a session id to DELETE", "DELETE", "/api/sessions/abc%0d%0aSet-Cookie:x=1"),
    Row("CRLF: after a valid session id", "GET", "/api/sessions/{sid}%0d%0aSet-Cookie:x=1"),
    Row("CRLF: in a turn id", "GET", "/api/turns/abc%0d%0aSet-Cookie:x=1/events"),
    Row("CRLF: in a turn id to cancel", "POST", "/api/turns/abc%0d%0aSet-Cookie:x=1/cancel"),
    Row("CRLF: in a page's id", "GET", "/c/abc%0d%0aSet-Cookie:x=1"),
    Row("CRLF: in a page's id, htmx", "GET", "/c/abc%0d%0aSet-Cookie:x=1/item", headers=HX),
    Row("CRLF: in a form route's id", "POST", "/c/abc%0d%0aSet-Cookie:x=1/title", form={"title": "t"}),
    Row("CRLF: in a page's turn id (answered with the conversation's state)", "GET",
        "/c/{sid}/turns/abc%0d%0aSet-Cookie:x=1/events", only(200)),
    Row("CRLF: in the seed's session_id", "GET", "/chat/history?session_id=abc%0d%0aSet-Cookie:x=1"),
    Row("CRLF: in the seed's user_id", "POST", "/chat/start?user_id=abc%0d%0aSet-Cookie:x=1"),
    Row("CRLF: in the Undo toast's id", "GET", "/?deleted=abc%0d%0aSet-Cookie:x=1"),
    Row("markup around a valid id in the Undo toast's id (a Query pattern is searched unless anchored)", "GET",
        "/?deleted=%3Cb%3E00000000-0000-4000-8000-000000000000%3C/b%3E"),
    Row("CRLF: in the language switch's next", "POST", "/lang", only(303),
        form={"lang": "en", "next": "/\r\nSet-Cookie: x=1"}, check=redirects_home),
    Row("CRLF: percent-encoded in next", "POST", "/lang", only(303),
        body=b"lang=en&next=%2Fc%2F%0D%0ASet-Cookie%3A%20x%3D1", headers=FORM, check=redirects_home),
    Row("CRLF: percent-encoded in the Referer a delete goes back to", "POST", "/c/{sid}/delete", only(303),
        headers={"Referer": "http://testserver/c/{sid}%0d%0aSet-Cookie:x=1"}, check=location_is_local),
    Row("CRLF: percent-encoded in HX-Current-URL", "GET", "/c/{sid}/item", only(200),
        headers={**HX, "HX-Current-URL": "http://testserver/c/{sid}%0d%0aSet-Cookie:x=1"}),
    Row("CRLF: percent-encoded in Last-Event-ID", "GET", "/api/turns/{tid}/events", {200, 204} | FOUR_XX,
        headers={"Last-Event-ID": "{tid}%0d%0aSet-Cookie:x=1:0"}),
    Row("CRLF: percent-encoded in Accept-Language", "GET", "/api/sessions/{sid}", only(200),
        headers={"Accept-Language": "en%0d%0aSet-Cookie: x=1"}),
    # headers the app parses, malformed
    Row("header: HX-Current-URL that is not a URL", "GET", "/c/{sid}/item", only(200),
        headers={**HX, "HX-Current-URL": "http://[::1"}),
    Row("header: HX-Current-URL that is not a URL, sidebar", "GET", "/sidebar", only(200),
        headers={**HX, "HX-Current-URL": "http://[::1"}),
    Row("header: Referer that is not a URL", "POST", "/c/{sid}/delete", only(303),
        headers={"Referer": "http://[::1"}, check=location_is_local),
    Row("header: Accept-Language of junk", "GET", "/api/sessions/{sid}", only(200),
        headers={"Accept-Language": ";;q=abc,,*;q=99999999999999999999,zh;q=-1"}),
    Row("header: Last-Event-ID of junk", "GET", "/api/turns/{tid}/events", only(200, 204),
        headers={"Last-Event-ID": ":::-1:x:"}),
    Row("header: an overlong identity cookie is ignored", "GET", "/api/sessions", only(200), who="long_cookie"),
    # overlong and malformed ids
    Row("id: 10,000 characters", "GET", "/api/sessions/" + "a" * 10_000),
    Row("id: 60,000 characters in a page", "GET", "/c/" + "a" * 60_000),
    Row("id: a UUID and one more", "GET", "/api/sessions/{sid}0"),
    Row("id: upper-case UUID", "GET", "/api/sessions/ABCDEF01-2345-4789-abcd-ef0123456789"),
    Row("id: 5,000-character turn id", "POST", "/api/turns/" + "f" * 5_000 + "/cancel"),
    Row("id: path traversal", "GET", "/api/sessions/..%2f..%2fetc%2fpasswd"),
    Row("user_id: 65 characters", "POST", "/chat/start", params={"user_id": "u" * 65}),
    Row("user_id: 10,000 characters", "POST", "/chat/start", params={"user_id": "u" * 10_000}),
    Row("user_id: a Redis key pattern", "POST", "/chat/start", params={"user_id": "*"}),
    # cursors
    Row("cursor: nan", "GET", "/api/sessions", params={"cursor": "nan_{sid}"}),
    Row("cursor: inf", "GET", "/api/sessions", params={"cursor": "inf_{sid}"}),
    Row("cursor: -inf", "GET", "/api/sessions", params={"cursor": "-inf_{sid}"}),
    Row("cursor: past float range", "GET", "/api/sessions", params={"cursor": "1e400_{sid}"}),
    Row("cursor: 400 digits", "GET", "/api/sessions", params={"cursor": "9" * 400 + "_{sid}"}),
    Row("cursor: x", "GET", "/api/sessions", params={"cursor": "x"}),
    Row("cursor: just the separator", "GET", "/api/sessions", params={"cursor": "_"}),
    Row("cursor: not an id", "GET", "/api/sessions", params={"cursor": "1.5_not-an-id"}),
    Row("cursor: a page's sidebar", "GET", "/sidebar", params={"cursor": "x"}, headers=HX),
    Row("cursor: a page", "GET", "/c/{sid}", params={"cursor": "nan_x"}),
    # numbers out of range
    Row("number: limit=0", "GET", "/api/sessions", params={"limit": "0"}),
    Row("number: limit=-1", "GET", "/api/sessions", params={"limit": "-1"}),
    Row("number: limit=10**9", "GET", "/api/sessions", params={"limit": str(10**9)}),
    Row("number: limit=1e3", "GET", "/api/sessions", params={"limit": "1e3"}),
    Row("number: limit=abc", "GET", "/api/sessions", params={"limit": "abc"}),
    Row("number: messages limit=0", "GET", "/api/sessions/{sid}/messages", params={"limit": "0"}),
    Row("number: messages limit=10**9", "GET", "/api/sessions/{sid}/messages", params={"limit": str(10**9)}),
    Row("number: before=99999999999999999999", "GET", "/api/sessions/{sid}/messages",
        params={"before": "99999999999999999999"}),
    Row("number: before=-1", "GET", "/api/sessions/{sid}/messages", params={"before": "-1"}),
    Row("number: before=1.5", "GET", "/api/sessions/{sid}/messages", params={"before": "1.5"}),
    Row("number: page before=99999999999999999999", "GET", "/c/{sid}/messages",
        params={"before": "99999999999999999999"}, headers=HX),
    Row("number: page before=-1", "GET", "/c/{sid}", params={"before": "-1"}),
    Row("number: readyz upstream=maybe", "GET", "/readyz", params={"upstream": "maybe"}),
    # imports: a message past MAX_IMPORT_MESSAGE_CHARS (50,000) refuses the whole file
    Row("import: a message of 200,000 characters", "POST", "/api/import", only(409), json={
        "format": "chat-export", "version": 1, "conversations": [{
            "title": "too long", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "messages": [{"role": "user", "content": "x" * 200_000}]}]}),
    # what only the machine itself (or a token) may read: not a visitor a proxy relays, whatever it claims
    Row("ops: /metrics for a relayed visitor", "GET", "/metrics", only(403), headers={"X-Forwarded-For": "203.0.113.7"}),
    Row("ops: /metrics for a visitor claiming loopback", "GET", "/metrics", only(403),
        headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}),
    Row("ops: the upstream probe for a relayed visitor", "GET", "/readyz", only(403), params={"upstream": "1"},
        headers={"X-Forwarded-For": "203.0.113.7"}),
    Row("ops: a bearer token that is not METRICS_TOKEN", "GET", "/metrics", only(403),
        headers={"X-Forwarded-For": "203.0.113.7", "Authorization": "Bearer guessed"}),
    Row("number: events after=99999999999999999999", "GET", "/api/turns/{tid}/events", FOUR_XX | {204},
        params={"after": "99999999999999999999"}),
    Row("number: events after=2**64", "GET", "/api/turns/{tid}/events", FOUR_XX | {204}, params={"after": str(2**64)}),
    Row("number: events after=-1 (a position no event has)", "GET", "/api/turns/{tid}/events", only(422),
        params={"after": "-1"}),
    Row("number: Last-Event-ID seq=99999999999999999999", "GET", "/api/turns/{tid}/events", FOUR_XX | {204},
        headers={"Last-Event-ID": "{tid}:99999999999999999999"}),
    Row("number: seed resume with seq=99999999999999999999", "GET", "/chat/stream", FOUR_XX | {204},
        params={"session_id": "{tsid}"}, headers={"Last-Event-ID": "{tid}:99999999999999999999"}),
    Row("number: page stream after=99999999999999999999", "GET", "/c/{tsid}/turns/{tid}/events", FOUR_XX | {200},
        params={"after": "99999999999999999999"}),
    # the web UI's streams read their query by hand (routing.py): a 422 where Query(...) gave one
    Row("number: page stream after=-1", "GET", "/c/{tsid}/turns/{tid}/events", only(422), params={"after": "-1"}),
    Row("number: page stream after=1.5", "GET", "/c/{tsid}/turns/{tid}/events", only(422), params={"after": "1.5"}),
    Row("bool: page stream searching=maybe", "GET", "/c/{tsid}/turns/{tid}/events", only(422),
        params={"searching": "maybe"}),
    Row("number: channel after=-1", "GET", "/c/{tsid}/events", only(422), params={"after": "-1"}),
    Row("number: channel after=abc", "GET", "/c/{tsid}/events", only(422), params={"after": "abc"}, headers=HX),
    Row("number: channel after=99999999999999999999", "GET", "/c/{tsid}/events", only(422),
        params={"after": "99999999999999999999"}),
    Row("channel: an id with markup", "GET", "/c/{tsid}/events", only(422), params={"channel": "<b>x</b>"}),
    Row("channel: 65 characters", "GET", "/c/{tsid}/events", only(422), params={"channel": "c" * 65}),
    Row("channel: a turn of 10,000 characters", "GET", "/c/{tsid}/events", only(422), params={"turn": "t" * 10_000}),
    # roles
    Row("role: unknown", "POST", "/api/sessions/{sid}/turns", only(400), json={"message": "hi", "role": "hacker"}),
    Row("role: upper case", "POST", "/api/sessions/{sid}/turns", only(400),
        json={"message": "hi", "role": "ASSISTANT"}),
    Row("role: trailing space", "POST", "/api/sessions/{sid}/turns", only(400),
        json={"message": "hi", "role": "assistant "}),
    Row("role: __proto__", "POST", "/api/sessions", only(400), json={"role": "__proto__"}),
    Row("role: unknown in PATCH", "PATCH", "/api/sessions/{sid}", only(400), json={"role": "root"}),
    Row("role: unknown in the seed's stream", "GET", "/chat/stream", only(400),
        params={"session_id": "{sid}", "message": "hi", "role": "hacker"}),
    Row("role: unknown in the role form", "POST", "/c/{sid}/role", only(400), form={"role": "hacker"}),
    Row("role: unknown in the role form, htmx", "POST", "/c/{sid}/role", only(400), form={"role": "hacker"},
        headers=HX),
    # empty messages and titles
    Row("empty: message", "POST", "/api/sessions/{sid}/turns", only(400), json={"message": ""}),
    Row("empty: whitespace message", "POST", "/api/sessions/{sid}/turns", only(400), json={"message": " \n\t\u3000"}),
    Row("empty: form message", "POST", "/c/{sid}/messages", only(400), form={"message": ""}),
    Row("empty: seed message", "GET", "/chat/stream", only(400), params={"session_id": "{sid}", "message": ""}),
    Row("empty: title", "PATCH", "/api/sessions/{sid}", only(400), json={"title": ""}),
    Row("empty: whitespace title", "PATCH", "/api/sessions/{sid}", only(400), json={"title": "  \n\t "}),
    Row("empty: form title", "POST", "/c/{sid}/title", only(400), form={"title": ""}),
    Row("empty: whitespace form title, htmx", "POST", "/c/{sid}/title", only(400), form={"title": "   "}, headers=HX),
    # API tokens and the Authorization header
    Row("token: CRLF in the id", "DELETE", "/api/tokens/abc%0d%0aSet-Cookie:x=1"),
    Row("token: 10,000-character id", "DELETE", "/api/tokens/" + "t" * 10_000),
    Row("token: CRLF in the id, settings form", "POST", "/settings/tokens/abc%0d%0aSet-Cookie:x=1/revoke"),
    Row("token: lone surrogate in the name", "POST", "/api/tokens", body='{"name": "\\ud800"}', headers=JSON),
    Row("token: name is a number", "POST", "/api/tokens", json={"name": 5}),
    Row("token: 100,000-character name", "POST", "/api/tokens", json={"name": "n" * 100_000}),
    Row("token: 10,000-character bearer token", "GET", "/api/sessions", only(401),
        headers={"Authorization": "Bearer " + "x" * 10_000}),
    Row("token: a bearer token with percent-encoded CRLF", "GET", "/api/sessions", only(401),
        headers={"Authorization": "Bearer chat_%0d%0aSet-Cookie:x=1"}),
    Row("token: Basic credentials (a proxy's, ignored: the cookie answers)", "GET", "/api/sessions", only(200),
        headers={"Authorization": "Basic Zm9vOmJhcg=="}),
    Row("token: a bearer without a token", "GET", "/api/sessions", FOUR_XX | {200},
        headers={"Authorization": "Bearer"}),
    # methods no route has
    Row("method: PUT", "PUT", "/api/sessions/{sid}", only(405), json={"title": "t"}),
    Row("method: TRACE", "TRACE", "/api/sessions/{sid}", only(405)),
    # a request must not be able to write a line of its own into the log
    Row("log: LF in a 400's path", "GET", "/api/sessions/x%0a" + FORGED_PATH,
        check=lambda ctx, _: log_line_forged(ctx, FORGED_LOG.format(**ctx.ids))),
    Row("log: LF in a streamed page's path", "GET",
        "/c/{sid}/turns/x%0a" + FORGED_PATH + "/events", only(200),
        check=lambda ctx, _: log_line_forged(ctx, FORGED_LOG.format(**ctx.ids))),
]


def log_line_forged(ctx: Context, forged: str) -> str | None:
    """None unless `forged` (part of a request's path) starts a line of the app's log."""
    deadline = time.monotonic() + 2
    while forged not in ctx.app.log() and time.monotonic() < deadline:  # the access line follows the response
        time.sleep(0.05)
    lines = [line for line in ctx.app.log().splitlines() if line.startswith(forged)]
    return f"the app's log has a line the request wrote: {lines[0]!r}" if lines else None


@dataclass(frozen=True)
class RawRow:
    """A request the HTTP client refuses to make (CR, LF or NUL inside a header), sent on a socket."""

    label: str
    head: str  # `{host}`, `{cookie}` and the context's ids are filled in; lines end with \r\n unless shown
    expect: Collection[int] = FOUR_XX  # malformed framing is refused; odd but legal bytes may be answered


RAW_ROWS = [
    RawRow("raw: bare CR in a Referer", "GET /api/sessions/{sid} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
           "Referer: /c/{sid}\rSet-Cookie: x=1\r\nConnection: close\r\n\r\n"),
    RawRow("raw: folded header line", "GET /api/turns/{tid}/events HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
           "Last-Event-ID: {tid}:0\r\n Set-Cookie: x=1\r\nConnection: close\r\n\r\n"),
    RawRow("raw: NUL in a header", "GET /api/sessions/{sid} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
           "Accept-Language: en\x00Set-Cookie: x=1\r\nConnection: close\r\n\r\n"),
    RawRow("raw: bare LF line ends", "GET /api/sessions/{sid} HTTP/1.1\nHost: {host}\nCookie: {cookie}\n"
           "X-Note: a\nSet-Cookie: x=1\nConnection: close\n\n"),
    RawRow("raw: CRLF in the request target", "GET /api/sessions/abc\r\nSet-Cookie: x=1 HTTP/1.1\r\nHost: {host}\r\n"
           "Connection: close\r\n\r\n"),
    RawRow("raw: invalid UTF-8 in the request target", "GET /api/sessions/\udcff\udcfe HTTP/1.1\r\nHost: {host}\r\n"
           "Connection: close\r\n\r\n"),
    RawRow("raw: Latin-1 bytes in HX-Current-URL", "GET /c/{sid}/item HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
           "HX-Request: true\r\nHX-Current-URL: /c/\udcff\udcfe\r\nConnection: close\r\n\r\n", only(200)),
    RawRow("raw: Latin-1 bytes in the cookies", "GET /api/sessions HTTP/1.1\r\nHost: {host}\r\n"
           "Cookie: chat_uid=\udcff\udcfe; lang=\udcff\r\nConnection: close\r\n\r\n", only(200)),
]


def judge_raw(ctx: Context, row: RawRow, cookie: str) -> str | None:
    address = urlsplit(ctx.app.base_url)
    head = row.head.format(host=address.netloc, cookie=f"chat_uid={cookie}", **ctx.ids)
    answer = b""
    try:
        with socket.create_connection((address.hostname, address.port), timeout=REQUEST_TIMEOUT) as sock:
            sock.sendall(head.encode("utf-8", "surrogateescape"))
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError as exc:
        return f"no complete answer ({type(exc).__name__}: {exc})"
    status_line, _, rest = answer.partition(b"\r\n")
    parts = status_line.split(b" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = rest.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    injected = [h for h in headers if h.lower().startswith("set-cookie") and INJECTED in h]
    if status not in row.expect:
        return f"{status_line.decode('latin-1')!r}, expected {'a 4xx' if row.expect == FOUR_XX else row.expect}"
    if injected:
        return f"injected response headers {injected}"
    return None


def test_malformed_and_oversize_input_is_a_4xx_never_a_5xx(
    make_client: Callable[..., httpx.Client], app_server: AppServer, totals: list[Outcome],
) -> None:
    client = make_client()
    uid = start_chat(client)["user_id"]
    tsid = create_session(client)["id"]
    tid = api_turn(client, tsid, "a turn to point at").turn_id
    clients: dict[str, Callable[[], httpx.Client]] = {
        "intruder": lambda: client,
        "long_cookie": lambda: make_client(cookies={"chat_uid": "a" * 7000}),
    }
    outcome = Outcome()
    totals.append(outcome)
    for row in MALFORMED_ROWS:
        # a fresh conversation per row: an accepted turn locks its conversation until the reply ends
        ids = {"uid": uid, "tsid": tsid, "tid": tid, "sid": create_session(client)["id"], "mark": unique()}
        ctx = Context(app_server, ids, clients, owner=client)
        outcome.record(row.label, judge(ctx, row))
    ctx = Context(app_server, {"tid": tid, "sid": tsid}, clients, owner=client)
    for raw in RAW_ROWS:
        outcome.record(raw.label, judge_raw(ctx, raw, client.cookies["chat_uid"]))

    print("\n" + outcome.report("malformed and oversize"))
    assert not outcome.failures, outcome.report("malformed and oversize")
