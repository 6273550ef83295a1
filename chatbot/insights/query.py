"""The period's events, read with DuckDB: the figures of the insights report, before grouping.

Only the period's day folders are listed (``events/YYYY/MM/DD/``, one listing per day), so
the work is bounded by the period, never by the bucket's history. A local bucket's files are
read where they lie; a Cloud Storage bucket's are downloaded into a temporary directory first
(the project's own Storage, no extra filesystem layer). DuckDB reads the JSONL with an explicit
schema, skipping lines it cannot parse, and drops the copies an at-least-once retry wrote
(same type, answer id and time). docs/insights.md has the same queries in BigQuery SQL.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

from chatbot.bucket.layout import EVENTS_PREFIX
from chatbot.bucket.storage import LocalStorage, Storage
from chatbot.errors import ClientError

__all__ = ["EventFigures", "PeriodTooLarge", "period_days", "query_deadline", "read_figures"]
logger = logging.getLogger(__name__)
# The fields the report reads; every other field of an event is ignored.
COLUMNS = {
    "type": "VARCHAR",
    "time": "VARCHAR",
    "answer_id": "VARCHAR",
    "question": "VARCHAR",
    "cached": "BOOLEAN",
    "answer": "VARCHAR",
    "sources": "STRUCT(source VARCHAR, score DOUBLE)[]",
    "rating": "VARCHAR",
    "comment": "VARCHAR",
}
DOWNLOAD_THREADS = 8

# One row per distinct event of the period's files.
_EVENTS = """
CREATE TEMP TABLE events AS
SELECT DISTINCT ON (type, answer_id, time) *, TRY_CAST(left(time, 10) AS DATE) AS day
FROM read_json($files, format = 'newline_delimited', ignore_errors = true, columns = {columns})
WHERE type IN ('answer', 'dont_know', 'feedback') AND answer_id IS NOT NULL
"""
# Questions: answered, or not (a dont_know, or an answer whose best source scored low).
_QUESTIONS = """
CREATE TEMP TABLE questions AS
SELECT answer_id, day, time, trim(question) AS question, coalesce(cached, false) AS cached,
       answer, sources, type = 'dont_know' AS dont_know,
       type = 'dont_know' OR coalesce(list_max([s.score for s in sources]), 0) < $weak
           AS unanswered
FROM events WHERE type IN ('answer', 'dont_know')
"""
_TOTALS = """
SELECT count(*), count(*) FILTER (dont_know), count(*) FILTER (unanswered AND NOT dont_know),
       count(*) FILTER (cached)
FROM questions
"""
_PER_DAY = """
SELECT strftime(day, '%Y-%m-%d'), count(*), count(*) FILTER (unanswered), count(*) FILTER (cached)
FROM questions WHERE day IS NOT NULL GROUP BY day ORDER BY day
"""
_WORDINGS = """
SELECT question, count(*) AS n FROM questions WHERE unanswered AND question <> ''
GROUP BY question ORDER BY n DESC, question LIMIT $top
"""
_DISTINCT_WORDINGS = "SELECT count(DISTINCT question) FROM questions WHERE unanswered"
_RATINGS = "SELECT rating, count(*) FROM events WHERE type = 'feedback' GROUP BY rating"
_DOWN_RATED = """
SELECT f.answer_id, f.time, q.question, q.answer, [s.source for s in q.sources], f.comment
FROM events f LEFT JOIN questions q USING (answer_id)
WHERE f.type = 'feedback' AND f.rating = 'down'
ORDER BY f.time DESC LIMIT $limit
"""
# Each answer cites a document once, however many of its chunks it drew on.
_CITED = """
SELECT source, count(*) AS n
FROM (SELECT unnest(list_distinct([s.source for s in sources])) AS source
      FROM questions WHERE NOT dont_know)
GROUP BY source ORDER BY n DESC, source
"""


class PeriodTooLarge(ClientError):
    """The period holds more than one request may read (413-like, but about the period)."""

    status_code = 422


@dataclass(frozen=True)
class EventFigures:
    """What the events of a period say, before unanswered wordings are grouped by meaning."""

    files: int
    bytes: int
    questions: int
    dont_know: int
    weak_answers: int
    cached: int
    per_day: dict[str, tuple[int, int, int]]  # day -> (questions, unanswered, cached)
    ratings: dict[str, int]
    wordings: list[tuple[str, int]]  # the most frequent unanswered wordings, with counts
    distinct_wordings: int
    down_rated: list[tuple]  # answer_id, time, question, answer, sources, comment
    cited: dict[str, int]


def period_days(days: int, today: date) -> list[date]:
    """The ``days`` UTC days that end with ``today``, oldest first."""
    return [today - timedelta(days=back) for back in range(days - 1, -1, -1)]


def _event_keys(storage: Storage, days: list[date]) -> list[str]:
    """The event batches of ``days``: one listing per day folder."""
    keys: list[str] = []
    for day in days:
        keys += [k for k in storage.list(f"{EVENTS_PREFIX}{day:%Y/%m/%d}/") if k.endswith(".jsonl")]
    return keys


@contextmanager
def _local_files(
    storage: Storage, keys: list[str], max_bytes: int
) -> Iterator[tuple[list[Path], int]]:
    """The batches as local files and their size: in place for a local bucket, else downloaded
    to a temporary directory (removed afterwards)."""
    if isinstance(storage, LocalStorage):
        paths = [storage.root / key for key in keys]
        total = sum(p.stat().st_size for p in paths)
        _check_size(total, max_bytes)
        yield paths, total
        return
    workdir = Path(tempfile.mkdtemp(prefix="romega-insights-"))
    pool = ThreadPoolExecutor(DOWNLOAD_THREADS)
    try:
        paths = [workdir / f"{n:07d}.jsonl" for n in range(len(keys))]
        total = 0
        for path, _ in zip(paths, pool.map(storage.download, keys, paths), strict=True):
            total += path.stat().st_size
            _check_size(total, max_bytes)  # stops downloading as soon as the cap is passed
        yield paths, total
    finally:
        pool.shutdown(cancel_futures=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _check_size(total: int, max_bytes: int) -> None:
    if total > max_bytes:
        raise PeriodTooLarge(
            f"The period's events hold {total / 1e6:.0f} MB, more than the {max_bytes / 1e6:.0f} "
            "MB one report reads here: ask for fewer days, or run `python -m indexer insights` "
            "or the BigQuery queries of docs/insights.md"
        )


@contextmanager
def query_deadline(con: duckdb.DuckDBPyConnection, seconds: float | None) -> Iterator[None]:
    """Interrupt ``con``'s running query after ``seconds``: PeriodTooLarge instead of a hang."""
    if seconds is None:
        yield
        return
    timer = threading.Timer(seconds, con.interrupt)
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        raise PeriodTooLarge(
            f"Reading the period's events took more than {seconds:g} s: ask for fewer days, or "
            "run `python -m indexer insights` or the BigQuery queries of docs/insights.md"
        ) from None
    finally:
        timer.cancel()


def read_figures(
    storage: Storage,
    days: list[date],
    *,
    weak_score: float,
    top_wordings: int,
    down_rated_limit: int,
    max_bytes: int,
    deadline_seconds: float | None = None,
) -> EventFigures:
    """Read the events of ``days`` from ``storage`` and compute the report's figures."""
    keys = _event_keys(storage, days)
    with _local_files(storage, keys, max_bytes) as (paths, size), duckdb.connect() as con:
        logger.info("Reading %d event files (%d bytes) for %d days", len(paths), size, len(days))
        if not paths:
            return EventFigures(0, 0, 0, 0, 0, 0, {}, {}, [], 0, [], {})
        with query_deadline(con, deadline_seconds):
            return _query(con, paths, size, weak_score, top_wordings, down_rated_limit)


def _query(
    con: duckdb.DuckDBPyConnection,
    paths: list[Path],
    size: int,
    weak_score: float,
    top_wordings: int,
    down_rated_limit: int,
) -> EventFigures:
    columns = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in COLUMNS.items()) + "}"
    con.execute(_EVENTS.format(columns=columns), {"files": [str(p) for p in paths]})
    con.execute(_QUESTIONS, {"weak": weak_score})
    questions, dont_know, weak, cached = con.execute(_TOTALS).fetchone() or (0, 0, 0, 0)
    return EventFigures(
        files=len(paths),
        bytes=size,
        questions=questions,
        dont_know=dont_know,
        weak_answers=weak,
        cached=cached,
        per_day={day: (n, un, ca) for day, n, un, ca in con.execute(_PER_DAY).fetchall()},
        ratings=dict(con.execute(_RATINGS).fetchall()),
        wordings=con.execute(_WORDINGS, {"top": top_wordings}).fetchall(),
        distinct_wordings=(con.execute(_DISTINCT_WORDINGS).fetchone() or (0,))[0],
        down_rated=con.execute(_DOWN_RATED, {"limit": down_rated_limit}).fetchall(),
        cited=dict(con.execute(_CITED).fetchall()),
    )
