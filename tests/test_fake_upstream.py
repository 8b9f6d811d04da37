"""The fake upstream itself: the suite and the benchmarks trust what it reports."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_upstream import (
    ThreadedFakeUpstream,
    expected_reply,
    expected_sys_tag,
    parse_reply,
    start_in_thread,
)

AUTH = {"Authorization": "Bearer anything"}


@pytest.fixture(scope="module")
def fake() -> Iterator[ThreadedFakeUpstream]:
    server = start_in_thread(ttft_ms=0, token_delay_ms=0)
    yield server
    server.stop()


def stream(fake: ThreadedFakeUpstream, messages: list[dict], headers: dict = AUTH) -> list[str]:
    """The data lines of a streamed completion."""
    body = {"model": "fake-model", "stream": True, "messages": messages}
    with httpx.stream("POST", f"{fake.base_url}/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def text_of(lines: list[str]) -> str:
    chunks = [json.loads(line) for line in lines if line != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


def test_streamed_reply_describes_the_request(fake: ThreadedFakeUpstream) -> None:
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "  what   is\n2+2  "},
    ]

    lines = stream(fake, messages)

    chunks = [json.loads(line) for line in lines[:-1]]
    assert lines[-1] == "[DONE]"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = text_of(lines)
    assert text == expected_reply(2, "be nice", "what is 2+2", 12)
    assert parse_reply(text) == {
        "ctx": 2, "sys": expected_sys_tag("be nice"), "last": "what is 2+2", "filler": 9,
    }


def test_directives_change_one_reply(fake: ThreadedFakeUpstream) -> None:
    lines = stream(fake, [{"role": "user", "content": "short [[tokens:5]]"}])

    assert len(lines) == 5 + 2  # five tokens, the stop chunk, [DONE]
    assert parse_reply(text_of(lines)) == {"ctx": 1, "sys": "none", "last": "short [[tokens:5]]", "filler": 2}


@pytest.mark.parametrize("status", [500, 429])
def test_fail_directive_answers_an_error_status(fake: ThreadedFakeUpstream, status: int) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": f"x [[fail:{status}]]"}]}

    response = httpx.post(f"{fake.base_url}/chat/completions", json=body, headers=AUTH)

    assert response.status_code == status
    assert "error" in response.json()


def test_drop_directive_cuts_the_connection(fake: ThreadedFakeUpstream) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        stream(fake, [{"role": "user", "content": "x [[drop:2]]"}])


def test_missing_key_is_unauthorized(fake: ThreadedFakeUpstream) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}

    response = httpx.post(f"{fake.base_url}/chat/completions", json=body)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_requests_are_recorded_without_the_key(fake: ThreadedFakeUpstream) -> None:
    root = fake.base_url.removesuffix("/v1")
    httpx.post(f"{root}/_reset")
    stream(fake, [{"role": "user", "content": "remember me"}])
    models = httpx.get(f"{fake.base_url}/models", headers=AUTH).json()

    recorded = httpx.get(f"{root}/_requests").json()

    assert models["data"][0]["id"] == "fake-model"
    assert [r["path"] for r in recorded] == ["/v1/chat/completions", "/v1/models"]
    assert recorded[0]["messages"] == [{"role": "user", "content": "remember me"}]
    assert all("authorization" not in {h.lower() for h in r["headers"]} for r in recorded)
    assert fake.chat_requests("remember me")[0]["model"] == "fake-model"
