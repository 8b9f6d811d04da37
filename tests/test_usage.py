"""Usage and budgets through real app processes: token counts from the fake model (and an estimate when
it reports none), /usage and /api/usage, prices, Prometheus counters, a monthly budget refused before
the model is called, and concurrent turns from two hosts held to one reply's overshoot."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.conftest import (
    AppServer,
    RedisServer,
    _start_app,
    _stop_app,
    api_turn,
    create_session,
    post_turn,
    read_events,
    unique,
)
from tests.fake_upstream import PROMPT_TOKENS_PER_MESSAGE, ThreadedFakeUpstream

BUDGET = 150


def start(redis_server: RedisServer, upstream: ThreadedFakeUpstream, tmp: pytest.TempPathFactory,
          **settings: str) -> AppServer:
    return _start_app(tmp.mktemp("app"), {
        "REDIS_URL": redis_server.url, "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_MODEL": "fake-model", "AUTO_TITLE": "false", "METRICS_TOKEN": "metrics-token", **settings})


@pytest.fixture(scope="module")
def budget_hosts(redis_server: RedisServer, upstream: ThreadedFakeUpstream,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppServer, AppServer]]:
    """Two hosts of one instance (one Redis, one SECRET_KEY) with a monthly budget and prices."""
    settings = {"TOKEN_BUDGET_MONTHLY": str(BUDGET), "MODEL_PRICES": "fake-model=1000/2000"}
    a = start(redis_server, upstream, tmp_path_factory, **settings)
    b = start(redis_server, upstream, tmp_path_factory, **settings)
    yield a, b
    _stop_app(a)
    _stop_app(b)


def same_identity(client: httpx.Client, host: AppServer) -> httpx.Client:
    return httpx.Client(base_url=host.base_url, cookies=client.cookies, timeout=30)


def test_each_reply_carries_its_counts_and_usage_sums_them(client: httpx.Client,
                                                         upstream: ThreadedFakeUpstream) -> None:
    sid = create_session(client)["id"]
    marker = unique("count")
    assert api_turn(client, sid, marker).ended
    assert api_turn(client, sid, f"{unique('quiet')} [[nousage]]").ended
    replies = [m for m in client.get(f"/api/sessions/{sid}/messages").json()["items"] if m["role"] == "assistant"]
    counted, estimated = replies[-2]["usage"], replies[-1]["usage"]
    request = upstream.chat_requests(marker)[-1]
    assert counted == {"input_tokens": PROMPT_TOKENS_PER_MESSAGE * len(request["messages"]), "output_tokens": 12,
                       "estimated": False, "ttft_ms": counted["ttft_ms"], "duration_ms": counted["duration_ms"],
                       "tokens_per_second": counted["tokens_per_second"]}
    assert estimated["estimated"] is True and estimated["output_tokens"] > 0
    usage = client.get("/api/usage").json()
    assert usage["total"]["replies"] == 2 and usage["total"]["estimated"] == 1
    assert usage["total"]["input_tokens"] == counted["input_tokens"] + estimated["input_tokens"]
    assert usage["rows"][0]["model"] == "fake-model" and usage["budget"] == 0
    assert usage["month_tokens"] == usage["total"]["input_tokens"] + usage["total"]["output_tokens"]

    page = BeautifulSoup(client.get(f"/c/{sid}").text, "html.parser")
    shown = page.select(".msg__usage summary")
    assert shown and "estimated" in shown[-1].get_text() + page.select(".msg__usage")[-1].get_text() or \
        "估算" in shown[-1].get_text()
    total = counted["input_tokens"] + counted["output_tokens"] + estimated["input_tokens"] + estimated["output_tokens"]
    assert str(total) in page.select_one("#conversation-usage").get_text()

    usage_page = BeautifulSoup(client.get("/usage").text, "html.parser")
    assert usage_page.select_one("svg#usage-chart rect.usage__bar") is not None
    assert "fake-model" in usage_page.select_one("#usage-days").get_text()


def test_a_reply_is_counted_once_in_prometheus(client: httpx.Client, app_server: AppServer) -> None:
    def counted() -> float:
        text = httpx.get(f"{app_server.base_url}/metrics").text
        found = re.search(r'chat_tokens_total\{kind="output",model="fake-model"\} ([0-9.e+]+)', text)
        return float(found.group(1)) if found else 0.0

    before = counted()
    assert api_turn(client, create_session(client)["id"], unique("prom")).ended
    assert counted() == before + 12


def test_a_turn_over_budget_is_refused_before_the_model_and_the_page_keeps_the_text(
        budget_hosts: tuple[AppServer, AppServer], upstream: ThreadedFakeUpstream) -> None:
    a, _ = budget_hosts
    with httpx.Client(base_url=a.base_url, timeout=30, headers={"Accept-Language": "en"}) as client:
        sid = create_session(client)["id"]
        while client.get("/api/usage").json()["month_tokens"] < BUDGET:
            assert api_turn(client, sid, unique("spend")).ended
        usage = client.get("/api/usage").json()
        assert usage["budget"] == BUDGET and usage["total"]["cost"] > 0
        marker = unique("refused")
        refused = post_turn(client, sid, marker)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "resets" in refused.json()["detail"] and not upstream.chat_requests(marker)
        # the web UI: the error in the page, what was typed still in the composer
        page = BeautifulSoup(client.get(f"/c/{sid}").text, "html.parser")
        token = page.select_one('meta[name="csrf-token"]')["content"]
        typed = f"keep me {marker}"
        sent = client.post(f"/c/{sid}/messages", data={"message": typed, "csrf_token": token})
        assert sent.status_code == 429
        form = BeautifulSoup(sent.text, "html.parser")
        assert form.select_one("#composer-input").get_text() == typed
        assert "budget" in form.select_one(".composer__error").get_text()
        usage_page = BeautifulSoup(client.get("/usage").text, "html.parser")
        assert usage_page.select_one("meter.usage__meter") is not None
        assert "Cost" in usage_page.select_one("#usage-models").get_text()


def test_concurrent_turns_from_two_hosts_overshoot_by_one_reply_at_most(
        budget_hosts: tuple[AppServer, AppServer]) -> None:
    """Ten turns at once, half on each host, in ten conversations of one user: one runs at a time (the
    others get 409), so the month ends at most one reply past the budget."""
    a, b = budget_hosts
    client_a = httpx.Client(base_url=a.base_url, timeout=30)
    sids = [create_session(client_a)["id"] for _ in range(10)]
    client_b = same_identity(client_a, b)
    statuses: list[int] = []
    try:
        for _ in range(20):
            if client_a.get("/api/usage").json()["month_tokens"] >= BUDGET:
                break
            barrier = threading.Barrier(10)
            results: list[tuple[httpx.Client, httpx.Response]] = []

            def one(index: int) -> None:
                client = client_a if index % 2 else client_b
                barrier.wait()
                results.append((client, post_turn(client, sids[index], f"{unique('race')} [[delay:20]]")))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            statuses += [response.status_code for _, response in results]
            for client, response in results:
                if response.status_code == 202:
                    assert read_events(client, response.json()["events_url"]).ended
        usage = client_a.get("/api/usage").json()
        replies = [m for sid in sids for m in client_a.get(f"/api/sessions/{sid}/messages").json()["items"]
                   if m["role"] == "assistant" and m.get("usage")]
        largest_reply = max(m["usage"]["input_tokens"] + m["usage"]["output_tokens"] for m in replies)
        assert set(statuses) <= {202, 409, 429} and 409 in statuses, statuses
        assert BUDGET <= usage["month_tokens"] < BUDGET + largest_reply, (usage["month_tokens"], largest_reply)
        assert post_turn(client_b, sids[0], "after").status_code == 429
    finally:
        client_a.close()
        client_b.close()


def test_the_demo_model_reports_an_estimate(demo_client: httpx.Client) -> None:
    sid = create_session(demo_client)["id"]
    assert api_turn(demo_client, sid, "你好, how are you?").ended
    reply = demo_client.get(f"/api/sessions/{sid}/messages").json()["items"][-1]
    assert reply["usage"]["estimated"] is True and reply["usage"]["output_tokens"] > 0
    usage = demo_client.get("/api/usage").json()
    assert usage["rows"][0]["model"] == "demo" and usage["total"]["estimated"] == 1
