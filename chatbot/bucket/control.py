"""Control objects in the bucket: the cache epoch and the chat instances' heartbeats.

The admin function cannot reach the chat instances' memory, so the bucket is the bridge:
admin bumps the epoch and chat instances read it; chat instances write heartbeats and admin
reads them. Both sides use this module, so the formats cannot drift apart.

    control/cache-epoch            a decimal integer; a missing object means 0
    control/instances/<id>.json    {"instance_id", "snapshot", "epoch", "cache", "refused",
                                    "written_at", "written_at_epoch_s"}
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

from chatbot.bucket.layout import EPOCH_KEY, INSTANCES_PREFIX, heartbeat_key
from chatbot.bucket.storage import Storage
from chatbot.errors import ObjectNotFound, PreconditionFailed

__all__ = [
    "MalformedEpoch",
    "bump_epoch",
    "fleet_view",
    "read_epoch",
    "read_heartbeats",
    "write_heartbeat",
]
BUMP_ATTEMPTS = 3
STALE_AFTER_HEARTBEATS = 3  # an instance silent this many intervals is no longer counted
# Heartbeats older than this (or 60 intervals) are left out of the view; the bucket's
# lifecycle rule deletes them (terraform/storage.tf), so reading the view never writes.
FORGET_AFTER_SECONDS = 3600.0
READ_WORKERS = 8
logger = logging.getLogger(__name__)


class MalformedEpoch(ValueError):
    """The epoch object holds something other than a non-negative integer."""


def read_epoch(storage: Storage) -> tuple[int, int]:
    """The cache epoch and its object's generation; (0, 0) when it was never bumped."""
    try:
        raw, generation = storage.read(EPOCH_KEY)
    except ObjectNotFound:
        return 0, 0
    try:
        epoch = int(raw.decode("ascii").strip() or 0)
    except (UnicodeDecodeError, ValueError):
        raise MalformedEpoch(f"{EPOCH_KEY} holds {raw[:40]!r}, not an integer") from None
    if epoch < 0:
        raise MalformedEpoch(f"{EPOCH_KEY} holds a negative epoch {epoch}")
    return epoch, generation


def bump_epoch(storage: Storage, attempts: int = BUMP_ATTEMPTS) -> int:
    """Add one to the cache epoch under a generation precondition; returns the new epoch.

    Two concurrent bumps both succeed, one after the other: the loser rereads and retries.
    A malformed object is replaced (any change of value makes chat instances drop entries).
    """
    for attempt in range(attempts):
        try:
            epoch, generation = read_epoch(storage)
        except MalformedEpoch as exc:
            logger.warning("Replacing a malformed cache epoch: %s", exc)
            epoch, generation = 0, storage.generation(EPOCH_KEY) or 0
        try:
            storage.write(EPOCH_KEY, f"{epoch + 1}\n".encode(), if_generation_match=generation)
        except PreconditionFailed:
            logger.info("Cache epoch changed under us (attempt %d/%d)", attempt + 1, attempts)
            continue
        return epoch + 1
    raise PreconditionFailed(f"{EPOCH_KEY} kept changing during {attempts} attempts")


def write_heartbeat(storage: Storage, instance_id: str, body: dict) -> None:
    """Replace this instance's heartbeat (last writer wins: only this instance writes it)."""
    storage.write(heartbeat_key(instance_id), json.dumps(body, sort_keys=True).encode())


def _read_heartbeat(storage: Storage, key: str) -> dict | None:
    try:
        raw, _ = storage.read(key)
        body = json.loads(raw)
        float(body["written_at_epoch_s"])
        if not isinstance(body.get("cache", {}), dict):
            raise TypeError("cache is not an object")
    except ObjectNotFound:  # deleted between list and read
        return None
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("Ignoring unreadable heartbeat %s: %r", key, exc)
        return None
    return body


def read_heartbeats(storage: Storage) -> list[dict]:
    """Every readable heartbeat; unreadable ones are skipped with a warning."""
    keys = [k for k in storage.list(INSTANCES_PREFIX) if k.endswith(".json")]
    if not keys:
        return []
    with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(keys))) as pool:
        results = list(pool.map(lambda key: _read_heartbeat(storage, key), keys))
    return [body for body in results if body is not None]


def _count(cache: dict, field: str) -> int:
    value = cache.get(field, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def fleet_view(storage: Storage, *, now: float, heartbeat_seconds: float) -> dict:
    """The fleet's cache as the chat instances last reported it, plus the current epoch.

    Instances heard from within STALE_AFTER_HEARTBEATS intervals are listed and totalled;
    older ones are listed apart as stale, and very old ones not at all.
    """
    epoch, _ = read_epoch(storage)
    fresh_within = STALE_AFTER_HEARTBEATS * heartbeat_seconds
    forget_after = max(FORGET_AFTER_SECONDS, 60 * heartbeat_seconds)
    instances: list[dict] = []
    stale: list[dict] = []
    for body in read_heartbeats(storage):
        age = max(0.0, now - float(body["written_at_epoch_s"]))
        if age > forget_after:
            continue
        entry = {**body, "age_seconds": round(age, 1)}
        if age <= fresh_within:
            entry["epoch_applied"] = body.get("epoch") == epoch
            instances.append(entry)
        else:
            stale.append(
                {
                    "instance_id": body.get("instance_id"),
                    "snapshot": body.get("snapshot"),
                    "written_at": body.get("written_at"),
                    "age_seconds": entry["age_seconds"],
                }
            )
    instances.sort(key=lambda e: str(e.get("instance_id")))
    stale.sort(key=lambda e: e["age_seconds"])
    caches = [e.get("cache") or {} for e in instances]
    hits = sum(_count(c, "hits") for c in caches)
    misses = sum(_count(c, "misses") for c in caches)
    return {
        "epoch": epoch,
        "instances": instances,
        "stale_instances": stale,
        "totals": {
            "instances": len(instances),
            "entries": sum(_count(c, "valid_entries") for c in caches),
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        },
        "fresh_within_seconds": fresh_within,
    }
