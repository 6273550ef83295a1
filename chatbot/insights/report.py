"""The insights report: the period's figures (DuckDB), unanswered questions grouped by meaning
(the embedder), each group's nearest document and the documents never cited (the snapshot).

Used by ``python -m indexer insights`` and the admin function's ``GET /insights``; both pass
their own bounds (``Limits``): the admin reads less and stops sooner than the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from chatbot.answering.embeddings import Embedder
from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.bucket.storage import Storage
from chatbot.insights.grouping import Group, group_wordings
from chatbot.insights.model import (
    CitedDocument,
    DayFigures,
    DownRated,
    InsightsReport,
    NearestDocument,
    Period,
    Ratings,
    Totals,
    UnansweredGroup,
    Wording,
)
from chatbot.insights.query import EventFigures, period_days, read_figures

__all__ = ["WEAK_SCORE", "Limits", "build_report", "eval_cases", "write_eval_cases"]
# An answer whose best source scored below this is counted as unanswered: the bot answered
# from a passage that was barely related (MIN_RELEVANCE, 0.30 by default, is where it stops
# answering at all).
WEAK_SCORE = 0.40
# Example wordings listed per group (the group's count covers them all).
WORDINGS_PER_GROUP = 8
CITED_MOST = 15


@dataclass(frozen=True)
class Limits:
    """How much one report may read and do."""

    top_wordings: int = 500  # distinct unanswered wordings embedded and grouped
    down_rated: int = 500
    max_bytes: int = 8 * 1024**3  # of event files read
    deadline_seconds: float | None = None  # for DuckDB's queries


def build_report(
    storage: Storage,
    *,
    days: int,
    now: datetime,
    embedder: Embedder,
    snapshot: tuple[str, KnowledgeIndex] | None,
    weak_score: float = WEAK_SCORE,
    limits: Limits = Limits(),
) -> InsightsReport:
    """The report of the ``days`` UTC days that end today (``now``)."""
    period = period_days(days, now.date())
    figures = read_figures(
        storage,
        period,
        weak_score=weak_score,
        top_wordings=limits.top_wordings,
        down_rated_limit=limits.down_rated,
        max_bytes=limits.max_bytes,
        deadline_seconds=limits.deadline_seconds,
    )
    index = snapshot[1] if snapshot else None
    groups = [_group(g, index) for g in group_wordings(figures.wordings, embedder)]
    documents = index.documents() if index else {}
    return InsightsReport(
        generated_at=now.isoformat(timespec="seconds"),
        snapshot=snapshot[0] if snapshot else None,
        weak_score=weak_score,
        period=Period(
            days=days,
            first_day=period[0].isoformat(),
            last_day=period[-1].isoformat(),
            files=figures.files,
            bytes=figures.bytes,
        ),
        totals=_totals(figures),
        per_day=[_day(day.isoformat(), figures) for day in period],
        ratings=Ratings(up=figures.ratings.get("up", 0), down=figures.ratings.get("down", 0)),
        unanswered_groups=groups,
        unanswered_wordings_grouped=len(figures.wordings),
        unanswered_wordings_total=figures.distinct_wordings,
        down_rated=[_down_rated(*row) for row in figures.down_rated],
        cited_most=[
            CitedDocument(source=s, citations=n)
            for s, n in list(figures.cited.items())[:CITED_MOST]
        ],
        never_cited=sorted(set(documents) - set(figures.cited)),
    )


def _totals(figures: EventFigures) -> Totals:
    unanswered = figures.dont_know + figures.weak_answers
    asked = figures.questions
    return Totals(
        questions=asked,
        answered=asked - unanswered,
        unanswered=unanswered,
        dont_know=figures.dont_know,
        weak_answers=figures.weak_answers,
        cached=figures.cached,
        answer_rate=round((asked - unanswered) / asked, 4) if asked else None,
        cache_hit_rate=round(figures.cached / asked, 4) if asked else None,
    )


def _day(day: str, figures: EventFigures) -> DayFigures:
    asked, unanswered, cached = figures.per_day.get(day, (0, 0, 0))
    return DayFigures(
        day=day, questions=asked, answered=asked - unanswered, unanswered=unanswered, cached=cached
    )


def _group(group: Group, index: KnowledgeIndex | None) -> UnansweredGroup:
    nearest = None
    if index is not None and group.centroid is not None:
        passages = index.query(group.centroid, 1)
        if passages:
            best = passages[0]
            nearest = NearestDocument(source=best.source, title=best.title, score=best.score)
    return UnansweredGroup(
        count=group.count,
        label=group.wordings[0][0],
        wordings=[Wording(text=t, count=n) for t, n in group.wordings[:WORDINGS_PER_GROUP]],
        nearest=nearest,
    )


def _down_rated(
    answer_id: str,
    time: str,
    question: str | None,
    answer: str | None,
    sources: list[str] | None,
    comment: str | None,
) -> DownRated:
    return DownRated(
        answer_id=answer_id,
        time=time,
        question=question,
        answer=answer,
        sources=list(dict.fromkeys(sources or [])),
        comment=comment,
    )


def eval_cases(report: InsightsReport) -> list[dict[str, str]]:
    """Unanswered and down-rated questions as ``eval/questions.jsonl`` cases to label.

    One case per group (its most frequent wording) and per down-rated question, each once;
    ``source`` is empty: the maintainer fills in the document that should answer it.
    """
    questions = [group.label for group in report.unanswered_groups]
    questions += [d.question for d in report.down_rated if d.question]
    return [{"question": q, "source": ""} for q in dict.fromkeys(questions)]


def write_eval_cases(report: InsightsReport, path: Path) -> int:
    """Write ``eval_cases`` as JSON lines to ``path``; the number of cases."""
    cases = eval_cases(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(case, ensure_ascii=False) + "\n" for case in cases)
    path.write_text("".join(lines), encoding="utf-8")
    return len(cases)
