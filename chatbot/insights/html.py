"""The insights report as one self-contained HTML page, its charts inline SVG drawn here.

No script, no external file: the page's Content-Security-Policy allows inline styles and
nothing else, so it renders offline, from an e-mail attachment or a bucket, the same way.
Every text comes through Jinja's autoescaping (questions and comments are visitors' text),
the SVG's included; chart geometry is computed here so the template only places it.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import pi

import jinja2

from chatbot.insights.model import InsightsReport

__all__ = ["render_html"]
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("chatbot.insights", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["thousands"] = lambda n: f"{n:,}"
# The per-day chart's drawing area, in SVG units (the SVG scales to the page's width).
DAY_CHART_WIDTH, DAY_CHART_HEIGHT, DAY_CHART_LEFT, DAY_CHART_BOTTOM = 960, 230, 56, 24
DAY_CHART_TOP = 10  # room for the top grid line's label
# Groups and down-rated answers drawn in the page (the JSON has them all).
GROUPS_SHOWN = 12
DOWN_RATED_SHOWN = 10
DONUT_RADIUS = 52


@dataclass(frozen=True)
class DayBar:
    """One day's stacked bar: answered below, unanswered on top, in SVG units."""

    x: float
    width: float
    answered_y: float
    answered_height: float
    unanswered_y: float
    unanswered_height: float
    label: str
    title: str


@dataclass(frozen=True)
class Axis:
    """A horizontal grid line with its value."""

    y: float
    value: int


def _nice_max(value: int) -> int:
    """The smallest axis top at least ``value`` whose quarters are round numbers."""
    scale = 1
    while True:
        for top in (4, 8, 12, 16, 20, 40, 60, 80):
            if top * scale >= value:
                return top * scale
        scale *= 10


def _day_chart(report: InsightsReport) -> tuple[list[DayBar], list[Axis]]:
    top = _nice_max(max((d.questions for d in report.per_day), default=0))
    plot_height = DAY_CHART_HEIGHT - DAY_CHART_BOTTOM - DAY_CHART_TOP
    slot = (DAY_CHART_WIDTH - DAY_CHART_LEFT) / max(len(report.per_day), 1)
    width = max(slot * 0.7, 1.0)
    label_every = max(1, round(len(report.per_day) / 10))
    bars = []
    for n, day in enumerate(report.per_day):
        answered = plot_height * day.answered / top
        unanswered = plot_height * day.unanswered / top
        bars.append(
            DayBar(
                x=round(DAY_CHART_LEFT + n * slot + (slot - width) / 2, 1),
                width=round(width, 1),
                answered_y=round(DAY_CHART_TOP + plot_height - answered, 1),
                answered_height=round(answered, 1),
                unanswered_y=round(DAY_CHART_TOP + plot_height - answered - unanswered, 1),
                unanswered_height=round(unanswered, 1),
                label=day.day[5:] if n % label_every == 0 or n == len(report.per_day) - 1 else "",
                title=f"{day.day}: {day.questions} questions, {day.answered} answered, "
                f"{day.unanswered} unanswered, {day.cached} from the cache",
            )
        )
    axes = [
        Axis(round(DAY_CHART_TOP + plot_height * (1 - k / 4), 1), top * k // 4) for k in range(5)
    ]
    return bars, axes


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.0f}%"


def _donut(rate: float | None) -> dict:
    """A ring showing ``rate``: the stroke length of its arc and of the whole circle."""
    circumference = 2 * pi * DONUT_RADIUS
    return {
        "radius": DONUT_RADIUS,
        "arc": round(circumference * (rate or 0.0), 1),
        "circumference": round(circumference, 1),
    }


def render_html(report: InsightsReport) -> str:
    """The report as one HTML document."""
    bars, axes = _day_chart(report)
    largest_group = max((g.count for g in report.unanswered_groups), default=1)
    most_cited = max((d.citations for d in report.cited_most), default=1)
    return _ENV.get_template("report.html.j2").render(
        report=report,
        bars=bars,
        axes=axes,
        chart={
            "width": DAY_CHART_WIDTH,
            "height": DAY_CHART_HEIGHT,
            "left": DAY_CHART_LEFT,
        },
        groups_shown=GROUPS_SHOWN,
        down_shown=DOWN_RATED_SHOWN,
        answer_rate=_percent(report.totals.answer_rate),
        cache_rate=_percent(report.totals.cache_hit_rate),
        answer_donut=_donut(report.totals.answer_rate),
        cache_donut=_donut(report.totals.cache_hit_rate),
        largest_group=largest_group,
        most_cited=most_cited,
    )
