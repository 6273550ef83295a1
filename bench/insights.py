"""Insights: one report over a million generated events, end to end.

The sample corpus's bucket is copied into the scratch directory and given a month of events
(quick mode: 100k) in the chat instances' own layout and format: 30 UTC days, 8 instances,
batches of 400 events; about 70% answers (a quarter of them from the cache, some from a
barely related passage), 20% "don't know" and 10% feedback (a third of it down, half of that
with a comment). Unanswered questions are 30 missing topics put in six wordings each, a few
asked often and a long tail, as visitors ask them. Then ``python -m indexer insights`` runs
over the 30 days as its own process, timed from start to exit: interpreter, model, snapshot
restore, DuckDB, grouping and HTML. The target (docs/architecture.md): under a minute on 2
cores.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.indexing import BuiltCorpus
from bench.servers import bench_env
from chatbot.bucket.layout import events_key
from harness.processes import ROOT, child_env

DAYS = 30
INSTANCES = 8
BATCH = 400
# Missing topics, most asked first (asked with Zipf's long tail).
TOPICS = [
    "gift cards",
    "a student discount",
    "parking at your office",
    "an office in Tokyo",
    "a mobile app",
    "weekend opening hours",
    "a referral bonus",
    "internships for students",
    "a charity programme",
    "a newsletter",
    "a dog-friendly office",
    "a Bitcoin payment option",
    "a free trial",
    "an affiliate programme",
    "training courses for beginners",
    "a podcast",
    "merchandise",
    "a loyalty card",
    "French translation",
    "a YouTube channel",
    "electric car charging",
    "wheelchair access to the building",
    "a printed brochure",
    "a public API for developers",
    "a lost and found desk",
    "company holiday dates",
    "catering for events",
    "a bug bounty",
    "a conference sponsorship",
    "an Android widget",
]
# The sample corpus's documents; answers cite all but the last three ("never cited").
SOURCES = sorted(p.name for p in (ROOT / "knowledge").iterdir() if p.is_file())
COMMENTS = [
    "That is not what I asked",
    "The price is out of date",
    "Too long, I wanted a yes or no",
    "The link does not work",
]
ZIPF = [1 / rank for rank in range(1, len(TOPICS) + 1)]
# Ways visitors phrase one missing topic; {t} is the topic.
PHRASINGS = [
    "Do you offer {t}?",
    "Is there {t}?",
    "Can I get {t} from you?",
    "{t}, available?",
    "Does Romega do {t}?",
    "Question about {t}",
]
ANSWER_TEXT = (
    "Romega Solutions offers this as part of its consulting services. Our team works with "
    "you to plan, build and run it, and the pricing page lists the day rates. [1][2]"
)


def _unanswered_wording(rng: random.Random) -> str:
    [topic] = rng.choices(TOPICS, weights=ZIPF)
    return rng.choice(PHRASINGS).format(t=topic)


def _event(
    rng: random.Random, n: int, when: datetime, asked: list[str], answerable: list[str]
) -> dict:
    stamp = when.isoformat(timespec="milliseconds")
    roll = rng.random()
    if roll < 0.10 and asked:
        rating = "down" if rng.random() < 0.33 else "up"
        commented = rating == "down" and rng.random() < 0.5
        comment = {"comment": rng.choice(COMMENTS)} if commented else {}
        feedback = {"type": "feedback", "time": stamp, "answer_id": rng.choice(asked)}
        return {**feedback, "rating": rating, **comment}
    answer_id = f"{n:012x}"
    asked.append(answer_id)
    if roll < 0.30:
        question = _unanswered_wording(rng)
        return {"type": "dont_know", "time": stamp, "answer_id": answer_id, "question": question}
    weak = rng.random() < 0.1
    question = _unanswered_wording(rng) if weak else rng.choice(answerable)
    top = rng.uniform(0.31, 0.39) if weak else rng.uniform(0.45, 0.85)
    cited = rng.sample(SOURCES[:-3], 3)
    return {
        "type": "answer",
        "time": stamp,
        "answer_id": answer_id,
        "question": question,
        "standalone_question": question,
        "cached": rng.random() < 0.25,
        "snapshot": "bench",
        "latency_ms": round(rng.uniform(5, 900), 1),
        "sources": [{"source": s, "score": round(top - k * 0.05, 4)} for k, s in enumerate(cited)],
        "generator": "gemini-2.5-flash",
        "answer": ANSWER_TEXT,
    }


def generate(
    bucket: Path, events: int, today: datetime, answerable: list[str], seed: int = 16
) -> dict:
    """Write ``events`` events over DAYS days into ``bucket``; what was written.

    Answered questions are drawn from ``answerable`` (the corpus's own questions).
    """
    rng = random.Random(seed)
    per_day = events // DAYS
    files = written = 0
    for back in range(DAYS):
        day = today - timedelta(days=back)
        asked: list[str] = []
        for start in range(0, per_day, BATCH):
            instance = f"bench-{start // BATCH % INSTANCES}"
            lines = []
            for k in range(start, min(start + BATCH, per_day)):
                when = day.replace(hour=0, minute=0) + timedelta(seconds=k * 86_000 / per_day)
                event = _event(rng, back * per_day + k, when, asked, answerable)
                lines.append(json.dumps(event))
            key = events_key(day.date(), instance, start)
            path = bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
            files += 1
            written += len(lines)
    size = sum(p.stat().st_size for p in (bucket / "events").rglob("*.jsonl"))
    return {"events": written, "files": files, "bytes": size, "days": DAYS}


def run(corpora: list[BuiltCorpus], quick: bool, workdir: Path) -> dict:
    """Generate the events, run the insights command once, and report its time and output."""
    sample = next(c for c in corpora if c.name == "sample")
    bucket = workdir / "insights-bucket"
    shutil.rmtree(bucket, ignore_errors=True)
    shutil.copytree(sample.bucket, bucket)
    t0 = time.perf_counter()
    events = 100_000 if quick else 1_000_000
    generated = generate(bucket, events, datetime.now(UTC), sample.questions)
    generated["generate_seconds"] = round(time.perf_counter() - t0, 1)
    out = workdir / "insights-report"
    command = [sys.executable, "-m", "indexer", "insights", "--from", str(bucket)]
    command += ["--days", str(DAYS), "--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=child_env(**bench_env()),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    seconds = time.perf_counter() - t0
    report = json.loads((out / "insights.json").read_text())
    return {
        "generated": generated,
        "seconds": round(seconds, 2),
        "under_a_minute": seconds < 60,
        "events_per_second": round(generated["events"] / seconds),
        "questions": report["totals"]["questions"],
        "unanswered": report["totals"]["unanswered"],
        "groups": len(report["unanswered_groups"]),
        "wordings_grouped": report["unanswered_wordings_grouped"],
        "html_bytes": (out / "insights.html").stat().st_size,
        "summary": done.stdout.strip().splitlines()[-1],
    }


def markdown(section: dict) -> str:
    """The section of docs/benchmarks.md."""
    g = section["generated"]
    return (
        f"`python -m indexer insights --days {g['days']}` over {g['events']:,} generated events "
        f"({g['files']:,} files, {g['bytes'] / 1e6:.0f} MB, {g['days']} days), timed as its "
        f"own process from start to exit: **{section['seconds']:.1f} s** "
        f"({section['events_per_second']:,} events/s). It found {section['questions']:,} "
        f"questions, {section['unanswered']:,} unanswered, grouped into {section['groups']} "
        f"groups from the {section['wordings_grouped']} most frequent wordings; the HTML "
        f"report is {section['html_bytes'] / 1e3:.0f} kB. Generating the events took "
        f"{g['generate_seconds']} s (not counted)."
    )
