"""A user's own token usage: the /usage page (a table and a chart drawn here as SVG: no JavaScript, both
themes through the stylesheet's colours) and GET /api/usage, the same as JSON."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Response

from webapp.core.spending import UsageReport
from webapp.web.deps import CurrentUser, SpendingDep
from webapp.web.error_handlers import PAGE_TAG
from webapp.web.htmx import ViewDep
from webapp.web.routing import PageRouter
from webapp.web.schemas import UsageOut

api_router = APIRouter(tags=["usage"])
page_router = PageRouter(include_in_schema=False, tags=[PAGE_TAG])

CHART_WIDTH, CHART_HEIGHT, CHART_TOP = 600, 160, 12


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: str
    tokens: int


def chart_bars(days: list[tuple[str, int]]) -> tuple[list[Bar], int]:
    """One bar per day, scaled to the busiest day (the chart's top, also returned)."""
    top = max((tokens for _, tokens in days), default=0)
    step = CHART_WIDTH / max(1, len(days))
    bars = []
    for position, (day, tokens) in enumerate(days):
        height = (CHART_HEIGHT - CHART_TOP) * tokens / top if top else 0
        if tokens and height < 1:
            height = 1  # a day with any use shows
        bars.append(Bar(x=round(position * step + step * 0.15, 1), y=round(CHART_HEIGHT - height, 1),
                        width=round(step * 0.7, 1), height=round(height, 1), day=day, tokens=tokens))
    return bars, top


@api_router.get("/api/usage", response_model=UsageOut)
async def usage_json(user: CurrentUser, spending: SpendingDep) -> UsageOut:
    """The caller's tokens of the last 30 days by day and model (newest first), by model, in all; this
    month's tokens against the monthly budget (0 = none) and when it resets. `cost` where MODEL_PRICES
    prices the model; `estimated` counts replies whose numbers are estimates (the model reported none)."""
    return UsageOut.of(await spending.report(user))


@page_router.get("/usage")
async def usage_page(view: ViewDep, user: CurrentUser, spending: SpendingDep) -> Response:
    report: UsageReport = await spending.report(user)
    bars, top = chart_bars(report.days)
    return view.render("usage.html", report=report, bars=bars, top=top, chart_width=CHART_WIDTH,
                       chart_height=CHART_HEIGHT)
