"""Token spending: each reply's counts (the model's, or an estimate marked so) kept with it and summed per
user, day and model in the save's MULTI; the monthly budget refused before the model is called."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest

from tests.fake_upstream import PROMPT_TOKENS_PER_MESSAGE, ThreadedFakeUpstream
from tests.unit.wiring import Core, core_settings, start_core
from webapp.base.errors import BudgetBusy, OverBudget
from webapp.base.models import Message
from webapp.core.spending import month_resets, parse_prices
from webapp.llm.providers import delta_text
from webapp.llm.tokens import estimate_tokens
from webapp.storage.spending import utc_day

ALICE, BOB = "alice", "bob"


async def reply_of(core: Core, user: str, text: str, sid: str | None = None) -> tuple[str, Message]:
    sid = sid or (await core.conversations.create(user)).id
    events = await core.finish(user, await core.writer.start_turn(sid, user, text, None, "en"))
    assert events[-1].type == "end", events
    return sid, (await core.history(user, sid))[-1]


async def test_a_reply_keeps_the_models_token_counts(core: Core, upstream: ThreadedFakeUpstream) -> None:
    _, reply = await reply_of(core, ALICE, "counted-1")
    request = upstream.chat_requests("counted-1")[-1]
    assert request["stream_options"] == {"include_usage": True}
    assert reply.usage is not None and not reply.usage.estimated
    assert reply.usage.input_tokens == PROMPT_TOKENS_PER_MESSAGE * len(request["messages"])
    assert reply.usage.output_tokens == 12  # the fake's tokens per reply
    assert reply.usage.duration_ms >= reply.usage.ttft_ms > 0
    assert Message.from_json(reply.to_json()).usage == reply.usage  # as stored, read back
    sid = (await core.conversations.browse(ALICE)).items[0].id
    conversation = await core.store.get_conversation(ALICE, sid)
    assert conversation.tokens == reply.usage.input_tokens + reply.usage.output_tokens


async def test_a_model_that_reports_nothing_gets_an_estimate_marked_so(core: Core) -> None:
    _, reply = await reply_of(core, ALICE, "quiet [[nousage]] [[echo]] 你好世界 hello there")
    assert reply.usage is not None and reply.usage.estimated
    assert reply.usage.output_tokens == estimate_tokens(reply.content) > 0
    assert reply.usage.input_tokens > 0


async def test_replies_are_summed_per_day_and_model(core: Core, upstream: ThreadedFakeUpstream) -> None:
    sid, first = await reply_of(core, ALICE, "sum-1")
    _, second = await reply_of(core, ALICE, "sum-2 [[nousage]]", sid)
    await reply_of(core, BOB, "someone else")
    report = await core.writer.spending.report(ALICE)
    assert [(row.day, row.model) for row in report.rows] == [(utc_day(), "fake-model")]
    row = report.rows[0]
    assert row.replies == 2 and row.estimated == 1
    assert row.input_tokens == first.usage.input_tokens + second.usage.input_tokens
    assert row.output_tokens == first.usage.output_tokens + second.usage.output_tokens
    assert report.month_tokens == row.tokens == report.total.tokens
    assert report.days[-1] == (utc_day(), row.tokens) and len(report.days) == 30
    assert report.budget == 0 and row.cost is None


async def test_the_sum_rides_in_the_saves_multi(core: Core) -> None:
    """No round trip is added to a turn: the month hash is written by the save's own MULTI."""
    sid = (await core.conversations.create(ALICE)).id
    await reply_of(core, ALICE, "warm", sid)
    before = await core.store.redis.info("commandstats")
    await reply_of(core, ALICE, "measured", sid)
    after = await core.store.redis.info("commandstats")
    hincrby = after.get("cmdstat_hincrby", {}).get("calls", 0) - before.get("cmdstat_hincrby", {}).get("calls", 0)
    exec_calls = after["cmdstat_exec"]["calls"] - before["cmdstat_exec"]["calls"]
    assert hincrby == 4 + 1 + 1  # in, out, replies, the month's total; the conversation's total; its count
    assert exec_calls == 1  # the save's MULTI, as before (the start is one script, START_TURN)


def test_prices_and_the_reset_date() -> None:
    assert parse_prices("gpt-4o=2.5/10, org/m:tag=0.1/0.2") == {"gpt-4o": (2.5, 10.0), "org/m:tag": (0.1, 0.2)}
    with pytest.raises(ValueError):
        parse_prices("gpt-4o=2.5")
    assert month_resets(1796083200.0 - 10)[0] == "2026-12-01"  # 2026-11-30T23:59:50Z
    assert month_resets(1796083200.0 + 30 * 86400)[0] == "2027-01-01"


def test_the_usage_chunk_is_read_whatever_its_shape() -> None:
    counted = delta_text(b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}')
    assert counted == "" and counted.counts == (7, 3)
    finishing = delta_text(b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],'
                           b'"usage":{"prompt_tokens":5,"completion_tokens":"x"}}')
    assert finishing == "" and finishing.counts is None
    assert delta_text(b'data: {"choices":[],"usage":null}') == ""


@pytest.fixture
def budgeted(event_loop: asyncio.AbstractEventLoop, unit_redis: Any, upstream: ThreadedFakeUpstream) -> Iterator[Core]:
    settings = core_settings(unit_redis.url, upstream.base_url, token_budget_monthly=100, rate_limit_per_minute=0)
    built = event_loop.run_until_complete(start_core(settings))
    try:
        yield built
    finally:
        event_loop.run_until_complete(built.aclose())


async def test_a_turn_over_budget_is_refused_before_the_model_is_called(
        budgeted: Core, upstream: ThreadedFakeUpstream) -> None:
    sid = (await budgeted.conversations.create(ALICE)).id
    spent = 0
    while spent < 100:  # each reply: 30-50 tokens in, 12 out
        _, reply = await reply_of(budgeted, ALICE, f"spend {spent}", sid)
        spent += reply.usage.input_tokens + reply.usage.output_tokens
    assert spent - (reply.usage.input_tokens + reply.usage.output_tokens) < 100  # the last crossed it, not more
    with pytest.raises(OverBudget) as refused:
        await budgeted.writer.start_turn(sid, ALICE, "one too many", None, "en")
    assert not upstream.chat_requests("one too many")
    assert refused.value.params["resets"] == month_resets()[0] and refused.value.status == 429
    assert int(refused.value.headers["Retry-After"]) > 0
    assert await budgeted.store.lock_holder(ALICE, sid) is None  # the conversation is free
    assert await budgeted.store.redis.get(budgeted.store.keys.budget_lane(ALICE)) is None
    # an admin's own budget for the user wins over the default: 0 = unlimited
    await budgeted.store.set_budget(ALICE, 0)
    await reply_of(budgeted, ALICE, "unlimited now", sid)


async def test_a_budgeted_user_has_one_reply_at_a_time(budgeted: Core) -> None:
    first = (await budgeted.conversations.create(ALICE)).id
    second = (await budgeted.conversations.create(ALICE)).id
    started = await budgeted.writer.start_turn(first, ALICE, "slow [[delay:50]]", None, "en")
    with pytest.raises(BudgetBusy):
        await budgeted.writer.start_turn(second, ALICE, "at once", None, "en")
    await budgeted.finish(ALICE, started)
    await reply_of(budgeted, ALICE, "after it", second)  # the save gave the lane back
    assert await budgeted.store.redis.get(budgeted.store.keys.budget_lane(ALICE)) is None


async def test_a_lane_left_by_a_turn_that_no_longer_runs_is_taken_over(budgeted: Core) -> None:
    sid = (await budgeted.conversations.create(ALICE)).id
    _, reply = await reply_of(budgeted, ALICE, "first", sid)
    ended = (await budgeted.store.get_conversation(ALICE, sid)).last_turn_id
    await budgeted.store.redis.set(budgeted.store.keys.budget_lane(ALICE), ended)  # as a dead host leaves it
    await reply_of(budgeted, ALICE, "second", sid)


async def test_a_lane_left_by_a_host_that_died_while_starting_frees_in_seconds(budgeted: Core) -> None:
    """A host that died between the lock round trip (which took the lane) and the start's save left a lane
    whose turn has no state: "starting" for LANE_STARTING_MS, then free (not for TURN_TIMEOUT_SECONDS)."""
    from webapp.storage.spending import LANE_STARTING_MS

    sid = (await budgeted.conversations.create(ALICE)).id
    lane, lane_ms = budgeted.store.keys.budget_lane(ALICE), budgeted.writer.spending.lane_ms
    await budgeted.store.redis.set(lane, "t-starting", px=lane_ms)  # taken a moment ago: still starting
    with pytest.raises(BudgetBusy):
        await budgeted.writer.start_turn(sid, ALICE, "too soon", None, "en")
    await budgeted.store.redis.set(lane, "t-died", px=lane_ms - LANE_STARTING_MS - 1000)  # taken 11 s ago
    await reply_of(budgeted, ALICE, "after the crash", sid)
    assert await budgeted.store.redis.get(lane) is None


async def test_a_provider_reporting_absurd_token_counts_cannot_break_the_save() -> None:
    from webapp.llm.providers import MAX_COUNT, _counts

    assert _counts({"usage": {"prompt_tokens": 10**30, "completion_tokens": -4}}) == (MAX_COUNT, 0)
    assert _counts({"usage": {"prompt_tokens": "12", "completion_tokens": 3}}) == (12, 3)
    assert _counts({"usage": {"prompt_tokens": "lots"}}) is None


async def test_a_replys_usage_survives_export_and_import(core: Core) -> None:
    from webapp.core.export_format import ExportFile

    await reply_of(core, ALICE, "exported")
    exported = await core.portability.everything(ALICE)
    recorded = exported["conversations"][0]["messages"][-1]["usage"]
    assert recorded["output_tokens"] == 12 and recorded["estimated"] is False
    ids, _ = await core.portability.import_(BOB, ExportFile.model_validate(exported))
    reply = (await core.history(BOB, ids[0]))[-1]
    assert reply.usage is not None and reply.usage.output_tokens == 12
    assert (await core.writer.spending.report(BOB)).total.tokens == 0  # spent by Alice, not by Bob now


async def test_a_reply_another_host_recovers_counts_its_text_estimated_and_frees_the_lane(budgeted: Core) -> None:
    """Its writer died mid-reply (its lease lapsed): what the stream holds is saved, and summed."""
    from webapp.base.models import TurnEvent, new_id, new_message_id, now_iso
    from webapp.storage.keys import TurnRef

    conversation = await budgeted.conversations.create(ALICE)
    turn_id = new_id()
    conversation.running_turn_id = turn_id
    asked = Message(id=new_message_id(), role="user", content="tell me", ts=now_iso())
    await budgeted.store.save_turn_start(conversation, asked, turn_id=turn_id, context_messages=5)
    await budgeted.store.redis.set(budgeted.store.keys.budget_lane(ALICE), turn_id)  # as its start took it
    ref = TurnRef(ALICE, turn_id)
    await budgeted.store.append_events([(ref, [TurnEvent(1, "chunk", "half of a long answer")])])
    await budgeted.writer.recovery.recover(ref, lock_taken=True)
    reply = (await budgeted.history(ALICE, conversation.id))[-1]
    assert reply.status == "interrupted" and reply.usage.estimated
    assert reply.usage.output_tokens == estimate_tokens("half of a long answer")
    report = await budgeted.writer.spending.report(ALICE)
    assert report.rows[0].model == "" and report.total.output_tokens == reply.usage.output_tokens
    assert await budgeted.store.redis.get(budgeted.store.keys.budget_lane(ALICE)) is None


def test_an_estimate_counts_content_parts_text_and_images() -> None:
    """A vision turn's prompt is content parts (issue 35): its text is estimated and each image counts
    IMAGE_TOKENS (a list here once failed the estimate, and the turn was never saved)."""
    from webapp.base.models import Usage
    from webapp.llm.tokens import IMAGE_TOKENS, MESSAGE_OVERHEAD, estimate_tokens, estimate_usage

    parts = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]
    usage = estimate_usage([{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}],
                           "a cat", Usage())
    assert usage.input_tokens == (estimate_tokens("Be brief.") + estimate_tokens("what is this?") + IMAGE_TOKENS
                                  + 2 * MESSAGE_OVERHEAD)
    assert usage.output_tokens == estimate_tokens("a cat") and usage.estimated
