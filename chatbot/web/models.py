"""The API contract: one pydantic model per request and response body.

Request models validate what clients send (strictly: no coercion, no unknown fields) and
their errors become one clear sentence naming the field (``chatbot.web.bodies``). Response
models build every JSON body the handlers send. ``chatbot.web.openapi`` generates the
documents' components from these same classes, so the code and the OpenAPI document cannot
disagree. Limits that come from Settings (the longest message) are passed as validation
context and written into the generated schema by ``chatbot.web.openapi``.

(Over 300 lines on purpose: one class per request and response body of both APIs; they
are the contract, so they stay in one place.)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from chatbot.bucket.layout import valid_version
from chatbot.insights.model import InsightsReport  # GET /insights; its contract lives there

__all__ = [
    "Activated",
    "ActivateRequest",
    "AdminInfo",
    "ApiInfo",
    "CacheCleared",
    "CacheStats",
    "ChatAnswer",
    "ChatRequest",
    "DeltaEvent",
    "DoneEvent",
    "Error",
    "FeedbackAccepted",
    "FeedbackRequest",
    "FleetStats",
    "GenerationError",
    "Health",
    "HistoryMessage",
    "InsightsReport",
    "MetaEvent",
    "RateLimitError",
    "RouteInfo",
    "SnapshotList",
    "SnapshotStatus",
    "Source",
]

EXAMPLE_QUESTION = "What services do you offer?"
NonNegative = Annotated[int, Field(ge=0)]


class RequestBody(BaseModel):
    """A request body: exact types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


class ResponseBody(BaseModel):
    """A response body whose every field is listed (additionalProperties: false).

    A field with a default may be left out of the body (it is not "required" in the schema).
    """

    model_config = ConfigDict(extra="forbid")


class OpenResponseBody(BaseModel):
    """A response body that may carry more than it lists (manifests, heartbeats grow)."""

    model_config = ConfigDict(extra="allow")


def rule(message: str) -> PydanticCustomError:
    """A validation failure whose message completes "Field '<name>' ..."."""
    return PydanticCustomError("field_rule", message)


# -- shared -----------------------------------------------------------------------------------


class Error(ResponseBody):
    """Every error: a message that says what is wrong, safe to show."""

    error: str = Field(min_length=1)
    status: Literal["error"]


class RateLimitError(ResponseBody):
    """Too many requests: the limit that was hit."""

    error: str = Field(pattern="^Rate limit exceeded: ")


class RouteInfo(ResponseBody):
    """One route of ``GET /`` with its per-IP limit."""

    method: str
    path: str
    rate_limit: str = Field(description="e.g. '20/minute', or 'unlimited'.")


# -- chat function ----------------------------------------------------------------------------


class HistoryMessage(RequestBody):
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _within_limit(cls, content: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_message_chars")
        if limit is not None and len(content) > limit:
            raise rule(f"must be at most {limit} characters (MAX_MESSAGE_CHARS)")
        return content


class ChatRequest(RequestBody):
    """A visitor's question, and the conversation so far when it is a follow-up."""

    message: str = Field(
        min_length=1,
        description="The visitor's question. Control characters are removed; a message with "
        "nothing else left is rejected.",
        examples=[EXAMPLE_QUESTION],
    )
    use_cache: bool = Field(
        True, description="false skips the cache lookup (the fresh answer is still stored)."
    )
    stream: bool = Field(
        False,
        description="true answers text/event-stream: `meta` (answer id, sources), `delta` "
        "pieces of the answer, then `done` or `error`.",
    )
    history: list[HistoryMessage] = Field(
        default_factory=list,
        description="The earlier turns, oldest first (the client keeps them). A follow-up is "
        "made standalone for retrieval; only questions without history are cached.",
    )

    @field_validator("message", mode="before")
    @classmethod
    def _clean(cls, message: object, info: ValidationInfo) -> object:
        # Before the type check, so a lone surrogate is removed rather than refused as bad
        # text. Control characters other than ordinary whitespace carry no meaning here.
        if not isinstance(message, str):
            return message  # the type check names what it should be
        cleaned = "".join(ch for ch in message if ch in "\t\n\r" or ch.isprintable())
        if not cleaned.strip():
            raise rule("must not be empty")
        limit = (info.context or {}).get("max_message_chars")
        # The raw length, as the schema's maxLength promises (and as a client counts it).
        if limit is not None and len(message) > limit:
            raise rule(f"must be at most {limit} characters")
        return cleaned.strip()

    @field_validator("history", mode="before")
    @classmethod
    def _few_enough(cls, history: object, info: ValidationInfo) -> object:
        # Counted before each message is validated: a huge history costs one check, not many.
        limit = (info.context or {}).get("max_history_messages")
        if isinstance(history, list) and limit is not None and len(history) > limit:
            raise rule(f"must have at most {limit} messages (MAX_HISTORY_MESSAGES)")
        return history

    @field_validator("history")
    @classmethod
    def _short_enough(cls, history: list[HistoryMessage], info: ValidationInfo) -> list:
        limit = (info.context or {}).get("max_history_chars")
        if limit is not None and sum(len(m.content) for m in history) > limit:
            raise rule(f"must be at most {limit} characters in all (MAX_HISTORY_CHARS)")
        return history


class Source(ResponseBody):
    """A document an answer draws on."""

    title: str = Field(description="The document's title.")
    source: str = Field(description="The document's file name.")
    score: float = Field(description="Relevance, higher is better.")
    url: str | None = Field(
        default=None,
        description="The document's public page: its own URL (Markdown front matter `url:`, "
        "HTML canonical link), else SOURCE_BASE_URL + its path; null when neither.",
    )


class ChatAnswer(ResponseBody):
    """A grounded answer."""

    answer_id: str = Field(description="Identifies this answer, e.g. for POST /feedback.")
    response: str = Field(description="The answer, citing sources.")
    status: Literal["success"]
    cached: bool = Field(description="Served from this instance's cache.")
    sources: list[Source] = Field(
        description="The documents the answer draws on, best first; empty when nothing "
        "relevant was found."
    )
    snapshot: str = Field(description="The knowledge snapshot used.")


ANSWER_ID_PATTERN = "^[A-Za-z0-9_-]{8,64}$"


class MetaEvent(ResponseBody):
    """SSE ``meta``: sent first, before any text, so the sources show while it streams."""

    answer_id: str
    sources: list[Source]
    snapshot: str
    cached: bool


class DeltaEvent(ResponseBody):
    """SSE ``delta``: the next piece of the answer; all of them joined are the answer."""

    text: str


class DoneEvent(ResponseBody):
    """SSE ``done``: the answer is complete."""

    status: Literal["success"]
    answer_id: str
    cached: bool


class FeedbackRequest(RequestBody):
    """A visitor's rating of one answer."""

    answer_id: str = Field(pattern=ANSWER_ID_PATTERN, description="From the answer rated.")
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=1000, description="What was wrong or right.")


class FeedbackAccepted(ResponseBody):
    """The rating is recorded (events reach the bucket in batches)."""

    status: Literal["accepted"]
    answer_id: str


class GenerationError(ResponseBody):
    """The answer could not be generated; a friendly text to show as is (also SSE ``error``)."""

    response: str
    status: Literal["error"]


class SnapshotStatus(ResponseBody):
    """The snapshot this instance serves: its version and size, nothing about where it lives.

    Refused versions and their reasons are in this instance's heartbeat (the admin function's
    GET /cache/stats), not here: /health is public.
    """

    version: str | None = Field(description="null until one is loaded.")
    documents: NonNegative | None = None
    chunks: NonNegative = 0


class Health(ResponseBody):
    """Readiness: healthy with the snapshot served, or unhealthy (the reason is not public)."""

    status: Literal["healthy", "degraded", "unhealthy"] = Field(
        description="degraded: ready, but Redis (REDIS_URL) is unreachable, so rate limits and "
        "cache are this instance's own for now."
    )
    message: str = Field(
        description="'Romega Chatbot is ready', or that no snapshot can be served yet; why "
        "is in the logs and the admin function's GET /cache/stats."
    )
    api_version: str
    cache_size: NonNegative
    snapshot: SnapshotStatus
    generator: str = Field(description="'gemini:<model>' or 'extractive' (no GOOGLE_API_KEY).")
    uptime_seconds: float = Field(0.0, ge=0)


class CacheStats(ResponseBody):
    """This instance's answer cache."""

    total_entries: NonNegative
    valid_entries: NonNegative
    expired_entries: NonNegative
    cache_ttl_seconds: int = Field(ge=1)
    hits: NonNegative
    misses: NonNegative
    hit_rate: float = Field(ge=0, le=1)


class ApiInfo(ResponseBody):
    """What the chat API is and how to use it."""

    name: str
    version: str
    description: str
    routes: list[RouteInfo]
    docs: str
    openapi: str
    contact: str


# -- admin function ---------------------------------------------------------------------------


class ActivateRequest(RequestBody):
    """The version LATEST should point at."""

    version: str = Field(min_length=1, max_length=100, pattern="^[A-Za-z0-9][A-Za-z0-9_.-]*$")

    @field_validator("version", mode="before")
    @classmethod
    def _plain_name(cls, version: object) -> object:
        # Checked before the schema's own keywords, so a wrong name gets this one sentence.
        if isinstance(version, str) and not valid_version(version):
            raise rule(
                "must be a snapshot name: up to 100 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit (see GET /snapshots)"
            )
        return version


class FleetTotals(OpenResponseBody):
    """The live instances' caches added up."""

    instances: NonNegative
    entries: NonNegative
    hits: NonNegative
    misses: NonNegative
    hit_rate: float = Field(ge=0, le=1)


class SharedCacheStats(ResponseBody):
    """The fleet's cache as Redis counts it (REDIS_URL on the admin function)."""

    reachable: bool
    epoch: NonNegative | None = None
    hits: NonNegative | None = None
    misses: NonNegative | None = None
    hit_rate: float | None = Field(None, ge=0, le=1)


class FleetStats(OpenResponseBody):
    """The cache epoch and the stats each live chat instance last reported in its heartbeat."""

    epoch: NonNegative
    instances: list[dict]
    stale_instances: list[dict]
    totals: FleetTotals
    fresh_within_seconds: float
    redis: SharedCacheStats | None = Field(
        None, description="Only when the admin function has REDIS_URL: every lookup counted."
    )


class CacheCleared(OpenResponseBody):
    """The epoch was bumped."""

    message: str = Field(pattern=r"^Cache cleared\.")
    epoch: int = Field(ge=1)


class SnapshotSummary(OpenResponseBody):
    """What a manifest says about a snapshot, in brief."""

    version: str
    created_at: str | None = None
    documents: int | None = None
    chunks: int = 0
    embedding_model: str = ""


class PublishedSnapshot(SnapshotSummary):
    """A published version; one that cannot be activated carries an ``error``."""

    latest: bool = False
    archive_present: bool = False
    error: str = ""


class SnapshotList(OpenResponseBody):
    """Published versions, newest first, and which one LATEST names."""

    latest: str | None = Field(description="The live version.")
    count: NonNegative
    snapshots: list[PublishedSnapshot]


class Activated(OpenResponseBody):
    """LATEST now points at ``version``."""

    version: str
    previous: str | None
    message: str
    snapshot: SnapshotSummary


class AdminInfo(OpenResponseBody):
    """What the admin API is and its routes."""

    name: str
    version: str
    description: str = ""
    authentication: str = ""
    routes: list[RouteInfo]
    openapi: str = ""
