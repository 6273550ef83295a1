"""Insights end to end: two real chat processes answer, visitors rate, the processes stop, and
both the command line and the admin function report what was sent; Chromium renders the HTML.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import FunctionProcess, request
from tests.conftest import ADMIN_SOURCE, CHAT_SOURCE, ROOT
from tests.test_docs_browser import CHROMIUM, chromium

TOKEN = "insights-system-token-0123456789abcdef"
# One topic the knowledge base lacks, put six ways (each scores under the weak-answer line:
# some are "don't know", some answered from a barely related passage), across both processes.
GIFT_CARDS = [
    "Do you sell gift cards?",
    "Are gift vouchers available?",
    "Can I purchase a gift card?",
    "Do you offer gift certificates?",
    "Could I buy a voucher as a present?",
    "gift card for a friend?",
]
OTHER_UNANSWERED = [
    "What is the boiling point of tungsten?",
    "Who won the football world cup in 1998?",
]
ANSWERABLE = ["Who founded Romega?", "What is the senior consultant day rate?"]
COMPLAINTS = {
    ANSWERABLE[1]: "The price is outdated <b>since May</b>",
    ANSWERABLE[0]: "Too long",
}


@pytest.fixture
def two_chats(bucket, tmp_path):
    procs = []
    for name in ("a", "b"):
        env = {
            "SNAPSHOT_URI": bucket.uri,
            "SNAPSHOT_DIR": str(tmp_path / f"snap-{name}"),
            "INSTANCE_ID": f"chat-{name}",
            "EVENTS_FLUSH_SECONDS": "3600",  # only the shutdown flush writes: all at once
        }
        proc = FunctionProcess("chat", CHAT_SOURCE, env, tmp_path / f"chat-{name}.log")
        procs.append(proc.start())
    for proc in procs:
        proc.wait_healthy()
    yield procs
    for proc in procs:
        proc.stop()


def ask(proc: FunctionProcess, message: str) -> dict:
    status, body, _ = request("POST", f"{proc.url}/chat", {"message": message})
    assert status == 200, body
    return body


def visit(procs: list[FunctionProcess]) -> dict:
    """What the visitors send; returns what the report must say."""
    a, b = procs
    for n, question in enumerate(GIFT_CARDS):
        ask(procs[n % 2], question)
    ask(a, OTHER_UNANSWERED[0])
    ask(b, OTHER_UNANSWERED[1])
    ids = {}
    for question in ANSWERABLE:
        ids[question] = ask(a, question)["answer_id"]
        assert ask(b, question)["answer_id"]
    assert ask(a, ANSWERABLE[0])["cached"] is True  # a's second "who founded": from its cache
    for question, comment in COMPLAINTS.items():
        body = {"answer_id": ids[question], "rating": "down", "comment": comment}
        status, _, _ = request("POST", f"{b.url}/feedback", body)  # rated on the other process
        assert status == 202
    request("POST", f"{a.url}/feedback", {"answer_id": ids[ANSWERABLE[0]], "rating": "up"})
    for proc in procs:  # what Cloud Run sends at scale-in: each writes its buffer and exits
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(timeout=30)
    return {"questions": 6 + 2 + 5, "unanswered": 8, "answered": 5, "cached": 1}


def check(report: dict, expected: dict) -> None:
    totals = report["totals"]
    assert {k: totals[k] for k in expected} == expected, totals
    gift, *others = report["unanswered_groups"]
    assert gift["count"] == 6 and {w["text"] for w in gift["wordings"]} == set(GIFT_CARDS)
    assert sorted(g["label"] for g in others) == sorted(OTHER_UNANSWERED)
    assert gift["nearest"]["source"].endswith((".md", ".html", ".txt"))
    down = {d["question"]: d for d in report["down_rated"]}
    assert {q: d["comment"] for q, d in down.items()} == COMPLAINTS
    assert all(d["answer"] and d["sources"] for d in down.values())
    assert report["ratings"] == {"up": 1, "down": 2}
    assert sum(d["questions"] for d in report["per_day"]) == expected["questions"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_insights_report_what_two_chat_processes_were_asked(two_chats, bucket, tmp_path):
    expected = visit(two_chats)
    out = tmp_path / "insights"
    cases = tmp_path / "to-label.jsonl"
    command = [sys.executable, "-m", "indexer", "insights", "--from", bucket.uri, "--days", "2"]
    run = subprocess.run(
        [*command, "--out", str(out), "--export-eval", str(cases)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "insights.json").read_text())
    check(report, expected)
    labels = [json.loads(line) for line in cases.read_text().splitlines()]
    assert labels[0] == {"question": report["unanswered_groups"][0]["label"], "source": ""}
    assert {"question": ANSWERABLE[1], "source": ""} in labels

    env = {"SNAPSHOT_URI": bucket.uri, "SNAPSHOT_DIR": str(tmp_path / "admin-snap")}
    with FunctionProcess(
        "admin", ADMIN_SOURCE, {**env, "ADMIN_TOKEN": TOKEN}, tmp_path / "admin.log"
    ) as admin:
        status, body, _ = request(
            "GET", f"{admin.url}/insights?days=2", headers={"X-Admin-Token": TOKEN}, timeout=120
        )
    assert status == 200, body
    check(body, expected)
    for same in ("totals", "per_day", "ratings", "down_rated", "cited_most", "never_cited"):
        assert body[same] == report[same], same

    rendered(out / "insights.html", tmp_path)


def rendered(page: Path, tmp_path: Path) -> None:
    """The report as Chromium draws it: charts and escaped visitor text, and a full screenshot."""
    dom = chromium(page.as_uri(), tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 3 and dom.stdout.count("<rect") >= 4
    assert "&lt;b&gt;since May&lt;/b&gt;" in dom.stdout and "<b>since May" not in dom.stdout
    shot = tmp_path / "insights.png"
    run = chromium(page.as_uri(), tmp_path / "profile-shot", f"--screenshot={shot}")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1280, 2000)
    assert len(data) > 60_000, f"the screenshot is nearly blank ({len(data)} bytes)"
