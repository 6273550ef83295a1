"""Handlers of the private admin function's routes; functions/admin/main.py maps paths to them.

The admin function cannot see the chat instances' memory; it works through the bucket only
(chatbot/control.py, chatbot/publishing.py). Every handler first checks ``X-Admin-Token``
in constant time against ADMIN_TOKEN; with no token configured every request is refused.
The Router applies the per-IP rate limit before the handler runs, so guessing is slow too.
"""

from __future__ import annotations

import functools
import hmac
import json
import threading
import time
from collections.abc import Callable

import flask

from chatbot.config import API_VERSION, Settings
from chatbot.control import bump_epoch, fleet_view
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
from chatbot.http import Handler, Reply, read_json
from chatbot.publishing import activate, current_latest, list_published
from chatbot.snapshot import manifest_key, valid_version
from chatbot.storage import Storage, open_storage

TOKEN_HEADER = "X-Admin-Token"
# One call's Cloud Storage retries; an operator would rather retry than wait two minutes.
STORAGE_RETRY_SECONDS = 10.0


def validate_activate_body(body: object) -> str:
    """Check the /snapshots/activate JSON body; returns the version or raises ClientError."""
    if not isinstance(body, dict):
        raise ClientError("Request body must be a JSON object")
    unknown = set(body) - {"version"}
    if unknown:
        raise ClientError(f"Unknown field(s): {', '.join(sorted(unknown))[:200]}")
    if "version" not in body:
        raise ClientError("Field 'version' is required")
    version = body["version"]
    if not isinstance(version, str):
        raise ClientError("Field 'version' must be a string")
    if not valid_version(version):
        raise ClientError(
            "Field 'version' must be a snapshot name: up to 100 letters, digits, '-', '_' "
            "or '.', starting with a letter or digit (see GET /snapshots)"
        )
    return version


class AdminApi:
    """Route handlers over the snapshot bucket, opened on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        document: dict | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._storage = storage
        self._document = json.dumps(document).encode() if document is not None else None
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def storage(self) -> Storage:
        """The bucket, opened once per instance."""
        if self._storage is None:
            with self._lock:
                if self._storage is None:
                    self._storage = open_storage(
                        self.settings.snapshot_uri, retry_deadline=STORAGE_RETRY_SECONDS
                    )
        return self._storage

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
        """``handler`` behind the token check."""

        @functools.wraps(handler)
        def checked(request: flask.Request) -> Reply:
            self.authorize(request)
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
        """GET /cache/stats: the cache epoch and what each live chat instance last reported."""
        view = fleet_view(
            self.storage, now=self._clock(), heartbeat_seconds=self.settings.heartbeat_seconds
        )
        return Reply(view, log={"instances": view["totals"]["instances"]})

    def clear_cache(self, request: flask.Request) -> Reply:
        """DELETE /cache: bump the epoch; every chat instance drops its answers on its next poll."""
        epoch = bump_epoch(self.storage)
        within = f"{self.settings.control_poll_seconds:g}"
        return Reply(
            {
                "message": (
                    f"Cache cleared. Every chat instance drops its cached answers within "
                    f"{within} seconds."
                ),
                "epoch": epoch,
            },
            log={"epoch": epoch},
        )

    def snapshots(self, request: flask.Request) -> Reply:
        """GET /snapshots: published versions, newest first, and which one LATEST names."""
        latest, _ = current_latest(self.storage)
        entries = list_published(self.storage)
        for entry in entries:
            entry["latest"] = entry["version"] == latest
        return Reply({"latest": latest, "count": len(entries), "snapshots": entries})

    def activate(self, request: flask.Request) -> Reply:
        """POST /snapshots/activate: point LATEST at a published version that checks out."""
        version = validate_activate_body(read_json(request, self.settings.max_body_bytes))
        if self.storage.generation(manifest_key(version)) is None:
            raise NotFound(f"Snapshot {version} is not published (see GET /snapshots)")
        try:
            done = activate(self.storage, version)
        except SnapshotError as exc:
            raise Conflict(f"Snapshot {version} cannot be activated: {exc}") from None
        within = f"{self.settings.control_poll_seconds:g}"
        if done.previous == version:
            message = f"{version} is already LATEST; nothing changed."
        else:
            message = (
                f"LATEST now points at {version} (was {done.previous}). Chat instances "
                f"switch to it within {within} seconds of their next request."
            )
        return Reply(
            {
                "version": version,
                "previous": done.previous,
                "message": message,
                "snapshot": done.manifest.summary(),
            },
            log={"version": version, "previous": done.previous},
        )

    def openapi(self, request: flask.Request) -> Reply:
        """GET /openapi.json: this function's OpenAPI 3.1 document."""
        if self._document is None:
            raise NotFound("No OpenAPI document is built into this function")
        return Reply({}, raw=self._document)

    def info(self, request: flask.Request, routes: dict) -> Reply:
        """GET /: what this API is and its routes with their limits."""
        listing = []
        for path, methods in routes.items():
            for method, route in methods.items():
                limit = getattr(self.settings, route.rate) if route.rate else "unlimited"
                listing.append({"method": method, "path": path, "rate_limit": limit})
        return Reply(
            {
                "name": "Romega Chatbot admin API",
                "version": API_VERSION,
                "description": "Fleet cache stats, fleet-wide cache clearing, snapshot rollback.",
                "authentication": f"every request needs the {TOKEN_HEADER} header",
                "routes": listing,
                **({"openapi": "/openapi.json"} if self._document is not None else {}),
            }
        )
