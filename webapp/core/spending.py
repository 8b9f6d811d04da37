"""Token spending: what each reply cost (kept with it and summed per user, day and model: storage/
spending.py), what it is worth at MODEL_PRICES, and the monthly token budgets.

Budgets (TOKEN_BUDGET_MONTHLY, 0 = none; an admin may give a user their own, 0 = unlimited) count the
tokens in and out of a calendar month in UTC and reset at 00:00 UTC on the 1st. A turn is refused
before the model is called when its user's recorded tokens that month have reached the budget; a
reply in progress is never cut off, so a user may end a month above their budget by the reply that
crossed it. How concurrent turns are kept to that one reply: a budgeted user's turns take their
*budget lane* (`{uid}:lane`, the running turn's id), in the lock round trip that reads the month's
sum; a second turn while one runs is refused (409, "wait for the reply being written"), and the
running turn's save adds its tokens and gives the lane back in the one MULTI. So each turn starts
against a sum that includes every earlier turn, and only the last one can cross the budget. A lane
whose turn no longer runs (its host died; the recovery saved it) is taken over at the next start;
one left by a host that died in the milliseconds between the lock and the turn's first write expires
after TURN_TIMEOUT_SECONDS.

Replies whose provider sends no counts are estimated (llm/tokens.py) and marked so; a turn's budget
check costs no round trip (its four commands ride in the lock's pipeline) and only when budgets are
on (a default budget, or admins who may set one).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field

from webapp.base.errors import BudgetBusy, OverBudget
from webapp.config import Settings
from webapp.storage.spending import TOTAL, parse_field, utc_day
from webapp.storage.store import Store

REPORT_DAYS = 30


def parse_prices(text: str) -> dict[str, tuple[float, float]]:
    """MODEL_PRICES ('gpt-4o=2.5/10,other=0.1/0.2': per million tokens in/out) as {model: (in, out)}."""
    prices: dict[str, tuple[float, float]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        model, sep, pair = item.strip().rpartition("=")
        price_in, slash, price_out = pair.partition("/")
        if not sep or not slash or not model.strip():
            raise ValueError(f"'{item.strip()}' is not model=input/output")
        prices[model.strip()] = (float(price_in), float(price_out))
        if min(prices[model.strip()]) < 0:
            raise ValueError(f"'{item.strip()}': a price is never negative")
    return prices


def month_resets(at: float | None = None) -> tuple[str, int]:
    """When the month's budget resets: (YYYY-MM-DD of the next 1st, seconds until then)."""
    now = time.time() if at is None else at
    year, month = time.gmtime(now)[:2]
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    reset = calendar.timegm((year, month, 1, 0, 0, 0))
    return f"{year:04d}-{month:02d}-01", max(1, int(reset - now))


@dataclass
class UsageRow:
    day: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    replies: int = 0
    estimated: int = 0  # replies whose counts are estimates
    cost: float | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class UsageReport:
    """A user's last REPORT_DAYS days: rows by day and model (newest first), the days' totals (oldest
    first, every day), totals by model, the month's tokens and the budget."""

    rows: list[UsageRow]
    days: list[tuple[str, int]]
    models: list[UsageRow]
    total: UsageRow
    month_tokens: int
    budget: int
    resets: str
    priced: bool
    extra: dict[str, object] = field(default_factory=dict)


class Spending:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.default_budget = settings.token_budget_monthly
        self.prices = parse_prices(settings.model_prices)
        # admins may give anyone a budget: then every turn reads it (in the lock round trip)
        self.on = bool(self.default_budget or settings.admin_users.strip())
        self.lane_ms = settings.turn_timeout_seconds * 1000

    def budget_month(self) -> str:
        """The month a turn's budget check reads ("" = budgets are off: no check)."""
        return utc_day()[:7] if self.on else ""

    def budget_of(self, own: int | None) -> int:
        return own if own is not None else self.default_budget

    async def check_start(self, user_id: str, turn_id: str, found: tuple[int, int | None, bool, str] | None) -> bool:
        """May the turn start (what the lock round trip read: storage/spending.budget_replies)? OverBudget,
        BudgetBusy, or whether it holds the lane (to give back when saved; the caller gives back a lane the
        lock round trip took when the start fails, this refusal included)."""
        if found is None:
            return False
        spent, own, taken, holder = found
        limit = self.budget_of(own)
        if not limit:
            return taken
        if spent >= limit:  # (a lane taken is given back by the caller, with the conversation's lock)
            resets, seconds = month_resets()
            raise OverBudget(retry_after=seconds, used=spent, budget=limit, resets=resets)
        if not taken and not await self.store.take_stale_lane(user_id, turn_id, holder, self.lane_ms):
            raise BudgetBusy()
        return True

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        price = self.prices.get(model)
        if price is None:
            return None
        return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000

    async def month_tokens(self, user_id: str) -> int:
        month = utc_day()[:7]
        return int((await self.store.month_spending(user_id, [month]))[0].get(TOTAL, 0))

    async def report(self, user_id: str, days: int = REPORT_DAYS, now: float | None = None) -> UsageReport:
        now = time.time() if now is None else now
        day_names = [utc_day(now - 86400 * back) for back in range(days - 1, -1, -1)]
        months = sorted({day[:7] for day in day_names})
        hashes = dict(zip(months, await self.store.month_spending(user_id, months)))
        wanted = set(day_names)
        rows: dict[tuple[str, str], UsageRow] = {}
        for month, fields in hashes.items():
            for name, value in fields.items():
                parsed = parse_field(name)
                if parsed is None:
                    continue
                day = f"{month}-{parsed[0]}"
                if day not in wanted:
                    continue
                row = rows.setdefault((day, parsed[1]), UsageRow(day, parsed[1]))
                amount = int(value)
                if parsed[2] == "i":
                    row.input_tokens += amount
                elif parsed[2] == "o":
                    row.output_tokens += amount
                elif parsed[2] == "n":
                    row.replies += amount
                elif parsed[2] == "e":
                    row.estimated += amount
        by_model: dict[str, UsageRow] = {}
        total = UsageRow("", "")
        per_day = dict.fromkeys(day_names, 0)
        for row in rows.values():
            row.cost = self.cost(row.model, row.input_tokens, row.output_tokens)
            per_day[row.day] += row.tokens
            for into in (by_model.setdefault(row.model, UsageRow("", row.model)), total):
                into.input_tokens += row.input_tokens
                into.output_tokens += row.output_tokens
                into.replies += row.replies
                into.estimated += row.estimated
                if row.cost is not None:
                    into.cost = (into.cost or 0.0) + row.cost
        current = hashes.get(utc_day(now)[:7], {})
        own = await self.store.get_budget(user_id)
        return UsageReport(
            rows=sorted(rows.values(), key=lambda r: (r.day, r.model), reverse=True),
            days=list(per_day.items()), models=sorted(by_model.values(), key=lambda r: -r.tokens), total=total,
            month_tokens=int(current.get(TOTAL, 0)), budget=self.budget_of(own), resets=month_resets(now)[0],
            priced=bool(self.prices),
        )
