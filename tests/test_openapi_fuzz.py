"""Property-based checks of the JSON API against its own OpenAPI schema (schemathesis).

The schema is loaded from the running app (`/openapi.json`) and every operation in it is
called with inputs generated from it: valid ones and ones that break it (wrong types,
missing fields, odd strings, extra parameters, methods the path does not have). Whatever
the input, the answer must never be a 5xx (schemathesis's `not_a_server_error` check).

Each generated case is sent up to three ways:
- as generated: made-up ids, which exercise the paths for malformed and unknown ids;
- as the owner: the ids replaced by a conversation, turn and API token of the caller's
  own, so the generated bodies and query strings reach the code behind the ownership check;
- as the owner with every integer query parameter set to an edge value (-1, 2**31, 2**63,
  2**64 - 1, 2**64, 10**20): a parameter the schema leaves unbounded is rarely drawn that
  large by chance, and just past 64 bits is where stores and parsers break.
The caller holds an identity cookie, as a browser would. The streaming endpoints are
included: with the fake upstream a reply ends in ~0.1 s, and every request has a timeout.
"""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.conftest import AppServer, create_session, read_events, start_chat

MAX_EXAMPLES = 30  # per operation: ~750 generated cases, ~1,500 requests, ~40 s on a 2-core machine
REQUEST_TIMEOUT = 10  # seconds
EDGE_INTEGERS = (-1, 2**31, 2**63, 2**64 - 1, 2**64, 10**20)

schema = schemathesis.pytest.from_fixture("api_schema")
# Hypothesis caches what it learns (Unicode tables, the constants of our modules) in ./.hypothesis
# unless told otherwise; it writes them before any fixture runs, so this is set on import.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "chat-tests-hypothesis")


class Caller:
    """An identity (its signed cookie) with a conversation, a finished turn, and fresh ones on demand."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT)
        self.session = requests.Session()  # what schemathesis sends with: one pool, not a connection per case
        self.user_id = start_chat(self.http)["user_id"]
        self.cookies = {"chat_uid": self.http.cookies["chat_uid"]}
        self.session_id = create_session(self.http)["id"]
        turn = self.http.post(f"/api/sessions/{self.session_id}/turns", json={"message": "a turn to follow"})
        assert turn.status_code == 202, turn.text
        read_events(self.http, turn.json()["events_url"])
        self.turn_id = turn.json()["turn_id"]

    def fresh_session(self) -> str:
        """A new conversation of the caller's: a DELETE or a new turn does not disturb other cases."""
        return create_session(self.http)["id"]

    def fresh_token(self) -> str:
        """The id of a new API token of the caller's, for a case that revokes one."""
        created = self.http.post("/api/tokens", json={"name": "fuzz"})
        assert created.status_code == 201, created.text
        return created.json()["id"]

    def close(self) -> None:
        self.http.close()
        self.session.close()


@pytest.fixture(scope="module")
def caller(app_server: AppServer) -> Iterator[Caller]:
    identity = Caller(app_server.base_url)
    yield identity
    identity.close()


@dataclass
class Tally:
    cases: int = 0
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    counts = Tally()
    yield counts
    print(f"\nopenapi fuzz: {counts.cases} generated cases, {sum(counts.requests.values())} requests over "
          f"{len(counts.requests)} method+path pairs; statuses {dict(sorted(counts.statuses.items()))}")


@pytest.fixture
def api_schema(app_server: AppServer) -> Any:
    loaded = schemathesis.openapi.from_url(f"{app_server.base_url}/openapi.json")
    loaded.config.generation.update(modes=list(GenerationMode), max_examples=MAX_EXAMPLES)
    return loaded


def as_owner(case: Any, caller: Caller) -> bool:
    """Point the case's ids at the caller's own conversation, turn and token; False if it names none.

    A case that may change its conversation (or start a turn in it, which locks it until the
    reply ends) gets a new one; the others share one, within the per-user conversation limit.
    """
    changes_it = case.method.upper() != "GET" or case.path == "/chat/stream"
    session = caller.fresh_session if changes_it else lambda: caller.session_id
    ids = {"session_id": session, "turn_id": lambda: caller.turn_id, "token_id": caller.fresh_token,
           "user_id": lambda: caller.user_id}
    changed = False
    for where in (case.path_parameters, case.query):
        for name in [name for name in (where or {}) if name in ids]:
            where[name] = ids[name]()
            changed = True
    return changed


def with_edge_integers(case: Any, value: int) -> bool:
    """Every integer query parameter set to `value`; False if the case has none."""
    names = [name for name, given in (case.query or {}).items() if type(given) is int]
    for name in names:
        case.query[name] = value
    return bool(names)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # nothing kept between runs
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failure names a curl line that replays it
    suppress_health_check=list(HealthCheck),
)
def test_the_json_api_never_answers_5xx(case: Any, caller: Caller, tally: Tally) -> None:
    tally.cases += 1
    variants: list[Callable[[Any], bool]] = [
        lambda _: True,
        lambda c: as_owner(c, caller),
        *(lambda c, value=value: with_edge_integers(c, value) for value in EDGE_INTEGERS),
    ]
    for prepare in variants:
        if not prepare(case):
            continue
        response = case.call(session=caller.session, cookies=caller.cookies, timeout=REQUEST_TIMEOUT)
        tally.requests[f"{case.method} {case.path}"] += 1
        tally.statuses[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error])
