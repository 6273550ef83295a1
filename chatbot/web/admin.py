"""The private admin function's routes: fleet cache stats and clear, snapshots and rollback,
and the insights report (``GET /insights``).

The admin function cannot see the chat instances' memory; it works through the bucket
(chatbot/bucket/control.py, chatbot/bucket/publishing.py) and, with REDIS_URL, through the
fleet's Redis (chatbot/shared_state/): a clear raises the epoch in both. The Router checks
``X-Admin-Token`` with ``authorize`` (constant time against ADMIN_TOKEN; no token
configured refuses everything) before it resolves any route, after one per-IP limit shared
by every failed attempt, so guessing is slow and learns nothing about the routes.
"""

from __future__ import annotations

import functools
import hmac
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import flask

from chatbot.answering.embeddings import Embedder, make_embedder
from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.bucket.control import bump_epoch, fleet_view
from chatbot.bucket.layout import manifest_key, read_latest
from chatbot.bucket.publishing import activate, list_published
from chatbot.bucket.storage import Storage, open_storage
from chatbot.config import API_VERSION, Settings
from chatbot.errors import (
    ClientError,
    Conflict,
    NotFound,
    NotReady,
    PreconditionFailed,
    SnapshotError,
    StorageError,
    Unauthorized,
)
from chatbot.lazy import Lazy
from chatbot.logs import annotate
from chatbot.shared_state import SharedAnswers, SharedStateDown, open_link
from chatbot.web.bodies import parse_body
from chatbot.web.models import (
    Activated,
    ActivateRequest,
    AdminInfo,
    CacheCleared,
    FleetStats,
    SharedCacheStats,
    SnapshotList,
)
from chatbot.web.router import Handler, Reply, Route

__all__ = ["TOKEN_HEADER", "AdminHandlers"]
TOKEN_HEADER = "X-Admin-Token"
# One call's Cloud Storage retries; an operator would rather retry than wait two minutes.
STORAGE_RETRY_SECONDS = 10.0
# GET /insights within the function's 60 s and 1 GiB: at most 90 days, 256 MB of events
# (about 250,000 events; peak memory about 620 MB with the model, measured) and 30 s of
# queries (more is PeriodTooLarge, 422), 200 wordings grouped and 200 down-rated answers
# listed; `python -m indexer insights` reads more.
MAX_INSIGHTS_DAYS = 90
INSIGHTS_MAX_BYTES = 256 * 1024**2
INSIGHTS_DEADLINE_SECONDS = 30.0
INSIGHTS_TOP = 200
# The HTML report has no script and loads nothing; say so to the browser too.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class AdminHandlers:
    """Route handlers over the snapshot bucket, opened on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._storage = Lazy(
            lambda: (
                storage or open_storage(settings.snapshot_uri, retry_deadline=STORAGE_RETRY_SECONDS)
            )
        )
        self._clock = clock
        self._embedder = Lazy(lambda: make_embedder(settings.embedding_backend, settings))
        self._one_report = threading.Lock()  # one report at a time: bounded memory and CPU
        link = open_link(settings)
        self.fleet = SharedAnswers(link, settings.cache_ttl) if link is not None else None

    @property
    def storage(self) -> Storage:
        """The bucket, opened once per instance."""
        return self._storage.get()

    @property
    def embedder(self) -> Embedder:
        """The chat's embedder (the admin zip ships its model too), loaded on first use."""
        return self._embedder.get()

    def routes(self) -> dict[str, dict[str, Route]]:
        """This module's part of the admin function's route table (all behind ``guarded``)."""
        return {
            "/cache/stats": {"GET": Route(self.fleet_stats, "rate_limit_admin")},
            "/cache": {"DELETE": Route(self.clear_cache, "rate_limit_admin_write")},
            "/snapshots": {"GET": Route(self.snapshots, "rate_limit_admin")},
            "/snapshots/activate": {"POST": Route(self.activate, "rate_limit_admin_write")},
            "/insights": {"GET": Route(self.insights, "rate_limit_admin")},
        }

    # -- the token ------------------------------------------------------------------------

    def authorize(self, request: flask.Request) -> None:
        """Raise Unauthorized unless the request carries the configured token."""
        expected = self.settings.admin_token
        if not expected:
            raise Unauthorized(
                "Admin API is disabled: ADMIN_TOKEN is not configured on this function"
            )
        given = request.headers.get(TOKEN_HEADER, "")
        # Bytes, so a non-ASCII header cannot raise; compare_digest's time does not depend
        # on where the first difference is.
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized()

    def guarded(self, handler: Handler) -> Handler:
        """``handler`` with bucket failures mapped to 409 (a lost race) or 503.

        The token was checked by the Router already (``authorize``, before routing).
        """

        @functools.wraps(handler)
        def checked(request: flask.Request) -> Reply:
            try:
                return handler(request)
            except StorageError as exc:
                if isinstance(exc, PreconditionFailed):
                    raise Conflict(
                        f"Another writer changed the bucket meanwhile; nothing was changed: "
                        f"check GET /snapshots and retry ({exc})"
                    ) from None
                raise NotReady(f"the snapshot store is unreachable: {exc}") from exc

        return checked

    # -- routes ---------------------------------------------------------------------------

    def fleet_stats(self, request: flask.Request) -> Reply:
        """GET /cache/stats: the cache epoch, what each live chat instance last reported, and
        the fleet's counters in Redis (with REDIS_URL)."""
        view = FleetStats.model_validate(
            fleet_view(
                self.storage, now=self._clock(), heartbeat_seconds=self.settings.heartbeat_seconds
            )
        )
        if self.fleet is not None:
            try:
                view.redis = SharedCacheStats(reachable=True, **self.fleet.stats())
            except SharedStateDown:
                view.redis = SharedCacheStats(reachable=False)
        annotate(instances=view.totals.instances)
        return Reply(view.model_dump(exclude_none=True))

    def clear_cache(self, request: flask.Request) -> Reply:
        """DELETE /cache: bump the epoch in the bucket, and in Redis when there is one."""
        epoch = bump_epoch(self.storage)
        annotate(epoch=epoch)
        within = f"{self.settings.control_poll_seconds:g}"
        later = (
            f"serves fresh answers from its first request once CONTROL_POLL_SECONDS ({within} s) "
            "have passed since its last check"
        )
        if self.fleet is None:
            message = f"Cache cleared. Every chat instance {later}."
        else:
            try:
                self.fleet.raise_epoch(epoch)
                message = (
                    "Cache cleared. Chat instances sharing Redis serve fresh answers from their "
                    f"next request; an instance without Redis {later}."
                )
            except SharedStateDown:
                annotate(redis="unreachable")
                message = f"Cache cleared, but Redis is unreachable: every chat instance {later}."
        return Reply(CacheCleared(message=message, epoch=epoch).model_dump())

    def snapshots(self, request: flask.Request) -> Reply:
        """GET /snapshots: published versions, newest first, and which one LATEST names."""
        latest = read_latest(self.storage).version
        entries = list_published(self.storage)
        for entry in entries:
            entry["latest"] = entry["version"] == latest
        listing = SnapshotList(latest=latest, count=len(entries), snapshots=entries)
        return Reply(listing.model_dump(exclude_unset=True))

    def activate(self, request: flask.Request) -> Reply:
        """POST /snapshots/activate: point LATEST at a published version that checks out.

        The target is checked as a chat instance would check it (chatbot/bucket/publishing.py
        ``activate``: manifest, the embedder of the snapshot LATEST names, archive, a safe
        extraction, opening it with Chroma and a smoke query); any refusal is a 409 with the
        reason, and LATEST stays where it was.
        """
        version = parse_body(request, ActivateRequest, self.settings.max_body_bytes).version
        if self.storage.generation(manifest_key(version)) is None:
            raise NotFound(f"Snapshot {version} is not published (see GET /snapshots)")
        try:
            done = activate(self.storage, version, open_index=KnowledgeIndex)
        except SnapshotError as exc:
            raise Conflict(f"Snapshot {version} cannot be activated: {exc}") from None
        annotate(version=version, previous=done.previous)
        within = f"{self.settings.control_poll_seconds:g}"
        if done.previous == version:
            message = f"{version} is already LATEST; nothing changed."
        else:
            message = (
                f"LATEST now points at {version} (was {done.previous}). Chat instances "
                f"switch to it within {within} seconds of their next request."
            )
        activated = Activated(
            version=version,
            previous=done.previous,
            message=message,
            snapshot=done.manifest.summary(),
        )
        return Reply(activated.model_dump(exclude_unset=True))

    def insights(self, request: flask.Request) -> Reply:
        """GET /insights?days=N: the insights report, JSON or (``format=html``) HTML.

        It reads only the period's event files, within the INSIGHTS_* bounds.
        """
        # Here, not at the top: the chat function imports this module too, without DuckDB.
        from chatbot.insights.html import render_html
        from chatbot.insights.report import Limits, build_report
        from chatbot.insights.snapshot import latest_index

        days = _days(request.args.get("days", "7"))
        html = _wants_html(request)
        annotate(days=days)
        limits = Limits(INSIGHTS_TOP, INSIGHTS_TOP, INSIGHTS_MAX_BYTES, INSIGHTS_DEADLINE_SECONDS)
        with self._one_report:
            with latest_index(self.storage, self.embedder) as snapshot:
                report = build_report(
                    self.storage,
                    days=days,
                    now=datetime.fromtimestamp(self._clock(), UTC),
                    embedder=self.embedder,
                    snapshot=snapshot,
                    limits=limits,
                )
        annotate(questions=report.totals.questions, groups=len(report.unanswered_groups))
        if html:
            page = render_html(report).encode()
            headers = {"Content-Security-Policy": REPORT_CSP}
            return Reply({}, raw=page, content_type="text/html; charset=utf-8", headers=headers)
        return Reply(report.model_dump())

    @staticmethod
    def index(routes: list[dict]) -> dict:
        """The body of GET /: what this API is and its routes with their limits."""
        return AdminInfo(
            name="Romega Chatbot admin API",
            version=API_VERSION,
            description="Fleet cache stats, fleet-wide cache clearing, snapshot rollback, "
            "insights.",
            authentication=f"every request needs the {TOKEN_HEADER} header",
            routes=routes,
            openapi="/openapi.json",
        ).model_dump()


def _days(text: str) -> int:
    """The ``days`` query parameter: a whole number from 1 to MAX_INSIGHTS_DAYS, else 400."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_INSIGHTS_DAYS:
        raise ClientError(
            f"Query parameter 'days' must be a whole number from 1 to {MAX_INSIGHTS_DAYS}, "
            f"got {text[:20]!r}"
        )
    return int(text)


def _wants_html(request: flask.Request) -> bool:
    """``format=html``, or a browser's Accept header preferring HTML; JSON otherwise."""
    chosen = request.args.get("format")
    if chosen is not None:
        if chosen not in ("json", "html"):
            raise ClientError(
                f"Query parameter 'format' must be 'json' or 'html', got {chosen!r:.30}"
            )
        return chosen == "html"
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"
