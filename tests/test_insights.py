"""Insights over events written by the real EventLog: figures, grouping, HTML, export, admin."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from chatbot.bucket.events import EventLog
from chatbot.bucket.gcs import GCSStorage
from chatbot.insights.grouping import group_wordings
from chatbot.insights.html import render_html
from chatbot.insights.query import PeriodTooLarge, period_days, query_deadline, read_figures
from chatbot.insights.report import build_report, eval_cases, write_eval_cases
from chatbot.insights.snapshot import latest_index

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
TOKEN = "insights-test-token-0123456789abcdef"
HOSTILE = "<script>alert('x')</script> & </td><img src=x onerror=alert(1)>"
STUDENT = [
    "Do you offer a student discount?",
    "Is there a discount for students?",
    "Can students get a reduced price?",
]
TOKYO = ["Do you have an office in Tokyo?", "Is there a Romega office in Japan?"]


def log_for(storage, day: datetime, instance: str = "i-1") -> EventLog:
    return EventLog(storage, instance, flush_seconds=3600, now=lambda: day)


def answer(log: EventLog, answer_id: str, question: str, score: float, cached: bool = False):
    log.record(
        "answer",
        answer_id=answer_id,
        question=question,
        standalone_question=question,
        cached=cached,
        sources=[{"source": "about.html", "score": score}, {"source": "about.html", "score": 0.2}],
        generator="extractive",
        answer=f"The answer to {question}",
        latency_ms=12.0,
    )


def write_period(storage, now: datetime = NOW) -> None:
    """A week's events: 9 questions today and yesterday, 1 older; a retried batch; a bad line."""
    today = log_for(storage, now)
    answer(today, "a1", "Who founded Romega?", 0.71)
    answer(today, "a2", "Who founded Romega?", 0.71, cached=True)
    answer(today, "weak", STUDENT[2], 0.35)  # answered from a barely related passage
    for n, question in enumerate(STUDENT[:2] + TOKYO + [HOSTILE]):
        today.record("dont_know", answer_id=f"dk{n}", question=question, cached=False)
    today.record("dont_know", answer_id="dk-again", question=STUDENT[0], cached=True)
    today.record("feedback", answer_id="a1", rating="down", comment=HOSTILE)
    today.record("feedback", answer_id="a2", rating="up")
    assert today.flush() == 11
    yesterday = log_for(storage, now - timedelta(days=1), "i-2")
    answer(yesterday, "y1", "What services do you offer?", 0.8)
    assert yesterday.flush() == 1
    old = log_for(storage, now - timedelta(days=10))
    answer(old, "old", "Outside the period?", 0.9)
    assert old.flush() == 1
    # An at-least-once retry: the same batch under another name; and a line that is not JSON.
    folder = f"events/{now:%Y/%m/%d}/"
    [first] = [k for k in storage.list(folder) if "/i-1-" in k]
    storage.write(first.replace("i-1-", "i-1-retry-"), storage.read(first)[0])
    storage.write(f"{folder}broken-1.jsonl", b'{"type": "answer", "answer_id": \n')


@pytest.fixture
def report(bucket, embedder):
    write_period(bucket)
    with latest_index(bucket, embedder) as snapshot:
        yield build_report(bucket, days=7, now=NOW, embedder=embedder, snapshot=snapshot)


def test_paraphrases_group_together_and_other_topics_apart(embedder):
    wordings = [(STUDENT[0], 3), (TOKYO[0], 2), (STUDENT[1], 1), (TOKYO[1], 1), (STUDENT[2], 1)]
    wordings += [("What is the boiling point of tungsten?", 1), ("Where can I park my car?", 1)]
    groups = group_wordings(wordings, embedder)
    assert [sorted(t for t, _ in g.wordings) for g in groups] == [
        sorted(STUDENT),
        sorted(TOKYO),
        ["What is the boiling point of tungsten?"],
        ["Where can I park my car?"],
    ]
    assert [g.count for g in groups] == [5, 3, 1, 1]


def test_the_report_counts_what_was_asked_once_each(report):
    totals = report.totals
    assert (totals.questions, totals.answered, totals.unanswered) == (10, 3, 7)
    assert (totals.dont_know, totals.weak_answers, totals.cached) == (6, 1, 2)
    assert totals.answer_rate == 0.3 and totals.cache_hit_rate == 0.2
    assert [d.day for d in report.per_day][-2:] == ["2026-11-19", "2026-11-20"]
    assert len(report.per_day) == 7 and report.per_day[0].day == "2026-11-14"
    assert [(d.questions, d.unanswered) for d in report.per_day[-2:]] == [(1, 0), (9, 7)]
    assert report.period.files == 4  # today's batch and its retried copy, the bad file, yesterday
    assert (report.ratings.up, report.ratings.down) == (1, 1)


def test_unanswered_questions_are_grouped_with_their_nearest_document(report, bucket):
    groups = report.unanswered_groups
    assert [(g.count, g.label) for g in groups[:2]] == [(4, STUDENT[0]), (2, TOKYO[0])]
    assert {w.text: w.count for w in groups[0].wordings} == {
        STUDENT[0]: 2,
        STUDENT[1]: 1,
        STUDENT[2]: 1,
    }
    assert sum(g.count for g in groups) == report.totals.unanswered
    assert report.snapshot is not None
    sources = {g.nearest.source for g in groups if g.nearest}
    assert sources and sources <= set(report.never_cited) | {"about.html"}
    assert groups[0].nearest is not None and groups[0].nearest.score > 0


def test_down_rated_answers_come_with_question_answer_sources_and_comment(report):
    [down] = report.down_rated
    assert down.answer_id == "a1" and down.question == "Who founded Romega?"
    assert down.answer == "The answer to Who founded Romega?"
    assert down.sources == ["about.html"] and down.comment == HOSTILE


def test_documents_cited_most_and_never(report):
    assert [(d.source, d.citations) for d in report.cited_most] == [("about.html", 4)]
    assert "about.html" not in report.never_cited and "pricing.md" in report.never_cited


def test_hostile_visitor_text_renders_as_text(report):
    page = render_html(report)
    assert "<script" not in page and "<img" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;/td&gt;" in page
    assert page.count("<svg") >= 3 and "://" not in page  # nothing loaded from anywhere


def test_export_eval_writes_cases_to_label(report, tmp_path):
    path = tmp_path / "eval" / "cases.jsonl"
    assert write_eval_cases(report, path) == len(eval_cases(report))
    cases = [json.loads(line) for line in path.read_text().splitlines()]
    assert cases[0] == {"question": STUDENT[0], "source": ""}
    assert {"question": "Who founded Romega?", "source": ""} in cases
    assert all(set(c) == {"question", "source"} and c["source"] == "" for c in cases)


def test_an_empty_period_is_a_report_of_zeros(bucket, embedder):
    report = build_report(bucket, days=3, now=NOW, embedder=embedder, snapshot=None)
    assert report.totals.questions == 0 and report.totals.answer_rate is None
    assert [d.questions for d in report.per_day] == [0, 0, 0]
    assert "Every question of the period was answered" in render_html(report)


def test_a_period_over_the_byte_cap_is_refused(bucket):
    write_period(bucket)
    with pytest.raises(PeriodTooLarge, match="ask for fewer days") as caught:
        read_figures(
            bucket,
            period_days(7, NOW.date()),
            weak_score=0.4,
            top_wordings=10,
            down_rated_limit=10,
            max_bytes=100,
        )
    assert caught.value.status_code == 422


def test_queries_past_the_deadline_are_refused():
    with duckdb.connect() as con, pytest.raises(PeriodTooLarge, match="more than 0.2 s"):
        with query_deadline(con, 0.2):
            con.execute("SELECT count(*) FROM range(1000000000000) AS a(n) WHERE n % 7 = 3")


def test_a_cloud_storage_bucket_is_read_through_its_downloads(gcs_bucket, bucket, embedder):
    storage = GCSStorage.from_uri(f"gs://{gcs_bucket}/site")
    write_period(storage)
    report = build_report(storage, days=7, now=NOW, embedder=embedder, snapshot=None)
    assert (report.totals.questions, report.totals.unanswered, report.period.files) == (10, 7, 4)
    assert report.unanswered_groups[0].count == 4


# -- the admin route --------------------------------------------------------------------------


@pytest.fixture
def admin(admin_app, bucket):
    write_period(bucket, datetime.now(UTC))  # the admin's period ends today
    return admin_app(ADMIN_TOKEN=TOKEN).test_client()


def test_admin_insights_answers_json_by_default(admin):
    response = admin.get("/insights?days=7", headers={"X-Admin-Token": TOKEN})
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert body["totals"]["questions"] == 10 and body["unanswered_groups"][0]["count"] == 4
    assert body["down_rated"][0]["comment"] == HOSTILE


@pytest.mark.parametrize(
    "query, headers",
    [("?days=7&format=html", {}), ("?days=7", {"Accept": "text/html,*/*;q=0.8"})],
)
def test_admin_insights_answers_html_when_asked(admin, query, headers):
    response = admin.get(f"/insights{query}", headers={"X-Admin-Token": TOKEN, **headers})
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "What visitors asked" in response.text and "<script" not in response.text


@pytest.mark.parametrize("days", ["0", "91", "abc", "-1", "7.5", "", "%C2%B2", "%EF%BC%97"])
def test_admin_insights_refuses_a_bad_period_with_a_400(admin, days):
    response = admin.get(f"/insights?days={days}", headers={"X-Admin-Token": TOKEN})
    assert response.status_code == 400
    assert "'days' must be a whole number from 1 to 90" in response.get_json()["error"]


def test_admin_insights_refuses_an_unknown_format(admin):
    response = admin.get("/insights?format=pdf", headers={"X-Admin-Token": TOKEN})
    assert response.status_code == 400 and "'format'" in response.get_json()["error"]
