"""The insights report's contract: what ``python -m indexer insights`` writes as JSON and the
admin's ``GET /insights`` answers (the OpenAPI document's ``InsightsReport`` is this model).

Counts are of distinct events (a batch written twice is read once: events are de-duplicated
by type, answer id and time). A *question* is an ``answer`` or ``dont_know`` event; it is
*unanswered* when it is a ``dont_know`` or an answer whose best source scored below
``weak_score``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CitedDocument",
    "DayFigures",
    "DownRated",
    "InsightsReport",
    "NearestDocument",
    "Period",
    "Ratings",
    "Totals",
    "UnansweredGroup",
    "Wording",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Period(_Model):
    """The UTC days read (both included) and what was read for them."""

    days: int = Field(ge=1)
    first_day: str = Field(description="YYYY-MM-DD (UTC).")
    last_day: str = Field(description="YYYY-MM-DD (UTC), today.")
    files: int = Field(ge=0, description="Event batches read.")
    bytes: int = Field(ge=0)


class Totals(_Model):
    """The period's questions and what became of them."""

    questions: int = Field(ge=0)
    answered: int = Field(ge=0)
    unanswered: int = Field(ge=0, description="dont_know plus weak answers.")
    dont_know: int = Field(ge=0)
    weak_answers: int = Field(ge=0)
    cached: int = Field(ge=0)
    answer_rate: float | None = Field(description="answered / questions; null without questions.")
    cache_hit_rate: float | None = Field(description="cached / questions.")


class DayFigures(_Model):
    """One UTC day of the period (days without questions are listed with zeros)."""

    day: str
    questions: int = Field(ge=0)
    answered: int = Field(ge=0)
    unanswered: int = Field(ge=0)
    cached: int = Field(ge=0)


class Wording(_Model):
    """One way visitors put an unanswered question, and how often."""

    text: str
    count: int = Field(ge=1)


class NearestDocument(_Model):
    """The knowledge document closest in meaning to a group (where the answer might go)."""

    source: str
    title: str
    score: float


class UnansweredGroup(_Model):
    """Unanswered questions that mean the same thing."""

    count: int = Field(ge=1, description="Questions in the group.")
    label: str = Field(description="Its most frequent wording.")
    wordings: list[Wording] = Field(description="Distinct wordings, most frequent first.")
    nearest: NearestDocument | None = None


class Ratings(_Model):
    """Visitors' thumbs."""

    up: int = Field(ge=0)
    down: int = Field(ge=0)


class DownRated(_Model):
    """An answer a visitor rated down, with what was asked and answered."""

    answer_id: str
    time: str
    question: str | None = Field(description="Null when its answer event is outside the period.")
    answer: str | None
    sources: list[str]
    comment: str | None


class CitedDocument(_Model):
    """A knowledge document and how many answers cited it."""

    source: str
    citations: int = Field(ge=0)


class InsightsReport(_Model):
    """What visitors asked in a period, what the bot could not answer, and what they rated."""

    generated_at: str
    snapshot: str | None = Field(description="The snapshot documents were matched against.")
    weak_score: float = Field(
        description="Answers whose best source scored below this count as unanswered."
    )
    period: Period
    totals: Totals
    per_day: list[DayFigures]
    ratings: Ratings
    unanswered_groups: list[UnansweredGroup]
    unanswered_wordings_grouped: int = Field(
        ge=0, description="Distinct unanswered wordings embedded (the most frequent ones)."
    )
    unanswered_wordings_total: int = Field(ge=0)
    down_rated: list[DownRated]
    cited_most: list[CitedDocument]
    never_cited: list[str] = Field(description="Snapshot documents no answer cited.")
