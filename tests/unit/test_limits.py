"""Sliding-window limits (webapp/core/limits.py) on a real redis-server: the counts the store keeps for
chosen moments, and what the core decides from them."""

from __future__ import annotations

import pytest

from tests.unit.wiring import Core
from webapp.base.errors import RateLimited
from webapp.core.limits import Limit, refuse_if_over

PER_MINUTE = Limit("turns-user", 10, 60)
WINDOW_START = 29_000_000 * 60  # a minute's first second (a moment of 2025), so the test chooses the timing


async def hit(core: Core, limit: Limit, key: str, now: float) -> bool:
    """One hit at `now`, as Limits.hit counts it (the same store call, the same decision): allowed?"""
    counts = await core.store.count_hits([limit.counter(key, now)])
    try:
        refuse_if_over([(limit, key)], counts, now)
    except RateLimited:
        return False
    return True


async def test_a_burst_across_a_window_boundary_is_not_twice_the_limit(core: Core) -> None:
    """The probe of issue 33: 10 a minute, 20 started in 4 s across a minute boundary. Now the ten at
    the end of one minute leave room for one at the start of the next (the rounding down), and the
    allowance comes back as they fade: about half of it half a minute later."""
    end_of_minute = WINDOW_START + 58
    assert [await hit(core, PER_MINUTE, "u1", end_of_minute + n * 0.1) for n in range(10)] == [True] * 10
    after = [await hit(core, PER_MINUTE, "u1", WINDOW_START + 60 + 2 + n * 0.1) for n in range(10)]
    assert after == [True] + [False] * 9, after

    fresh = "u2"
    for n in range(10):
        assert await hit(core, PER_MINUTE, fresh, end_of_minute + n * 0.1)
    half_way = WINDOW_START + 60 + 31  # 29/60 of the old minute's ten still inside: 4.8, counted as 4
    allowed = [await hit(core, PER_MINUTE, fresh, half_way + n * 0.01) for n in range(10)]
    assert allowed == [True] * 6 + [False] * 4, allowed


async def test_a_steady_caller_gets_the_limit_every_window(core: Core) -> None:
    """A hit every 6 s at 10 a minute is never refused, window after window."""
    for n in range(40):
        assert await hit(core, PER_MINUTE, "steady", WINDOW_START + 0.5 + n * 6.01), n


@pytest.mark.parametrize("start", [5.0, 30.0, 58.0])
async def test_retry_after_is_when_the_next_hit_fits(core: Core, start: float) -> None:
    """A refused caller told Retry-After: N is refused a second before N and allowed at N (a refused
    hit counts, as a turn's does: the wait includes it)."""
    key = f"retry-{start}"
    now = WINDOW_START + start
    while await hit(core, PER_MINUTE, key, now):
        now += 0.01
    counts = await core.store.count_hits([PER_MINUTE.counter(key, now)])
    with pytest.raises(RateLimited) as refused:
        refuse_if_over([(PER_MINUTE, key)], counts, now)
    wait = refused.value.retry_after
    assert 1 <= wait <= 120
    assert not await hit(core, PER_MINUTE, key, now + wait - 1.5)
    await core.store.uncount_hits([PER_MINUTE.counter(key, now + wait - 1.5)])  # (a look, not a hit)
    assert await hit(core, PER_MINUTE, key, now + wait)
