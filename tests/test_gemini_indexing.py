"""Indexing with EMBEDDING_BACKEND=gemini against the fake Gemini: quotas, pacing, bad replies.

The real google-genai client, the real indexer CLI and a local-folder bucket; the fake
enforces a per-second request quota with 429 RESOURCE_EXHAUSTED and a retryDelay, and
counts every text it sent back embedded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.corpus import write_knowledge
from chatbot.bucket.layout import read_latest
from chatbot.bucket.storage import LocalStorage
from harness.fake_gemini import FakeGemini, rate_limited, wrong_embeddings
from indexer.__main__ import main
from indexer.documents import chunk_knowledge

CHUNKS = 640
REQUESTS = 7  # batch requests of at most 100 texts
EMBED = "batchEmbedContents"


@pytest.fixture
def knowledge(tmp_path: Path) -> Path:
    folder = tmp_path / "knowledge"
    write_knowledge(folder, CHUNKS)
    return folder


@pytest.fixture
def gemini_env(monkeypatch, fake_gemini: FakeGemini) -> None:
    for name, value in {
        "EMBEDDING_BACKEND": "gemini",
        "GOOGLE_API_KEY": "AIza-test-key-never-logged",
        "GEMINI_BASE_URL": fake_gemini.url,
        "RETRY_DELAY": "0.05",
        "EMBEDDING_REQUEST_RATE": "1000/second",
        "EMBEDDING_TOKEN_RATE": "100000000/minute",
    }.items():
        monkeypatch.setenv(name, value)


def run(knowledge: Path, bucket: Path, *extra: str) -> int:
    out = bucket.parent / "out"
    argv = ["run", "--knowledge", str(knowledge), "--out", str(out), "--to", str(bucket)]
    return main([*argv, "--no-progress", *extra])


def embedding_texts(knowledge: Path) -> list[str]:
    chunks, _ = chunk_knowledge(knowledge)
    return [c.embedding_text() for c in chunks]


def test_a_build_through_quota_errors_embeds_every_chunk_exactly_once(
    gemini_env, fake_gemini, knowledge, tmp_path, capsys
):
    # Scripted, not timed: 429s with a retryDelay at the start and in the middle of the build.
    quota = rate_limited(retry_delay=0.2)
    fake_gemini.script([quota, quota, 200, 200, quota, 200], method=EMBED)
    assert run(knowledge, tmp_path / "bucket") == 0
    printed = capsys.readouterr().out
    texts = embedding_texts(knowledge)
    assert len(texts) == CHUNKS and f"embedded {CHUNKS}" in printed
    assert fake_gemini.embedded_texts == {text: 1 for text in texts}
    assert len(fake_gemini.calls(EMBED)) == REQUESTS + 3  # each 429 waited and was retried
    assert read_latest(LocalStorage(tmp_path / "bucket")).version is not None


def test_pacing_keeps_the_build_under_the_quota(
    gemini_env, fake_gemini, knowledge, tmp_path, monkeypatch
):
    monkeypatch.setenv("EMBEDDING_REQUEST_RATE", "3/second")
    fake_gemini.embed_quota(requests=4, per_seconds=1.0)
    assert run(knowledge, tmp_path / "bucket") == 0
    assert len(fake_gemini.calls(EMBED)) == REQUESTS  # not one 429: the pacer waited instead
    assert sum(fake_gemini.embedded_texts.values()) == CHUNKS


def test_an_incremental_gemini_build_embeds_only_the_changed_document(
    gemini_env, fake_gemini, knowledge, tmp_path, capsys
):
    bucket = tmp_path / "bucket"
    assert run(knowledge, bucket) == 0
    before = set(embedding_texts(knowledge))
    document = sorted(knowledge.rglob("*.md"))[3]
    document.write_text(document.read_text().replace("## ", "## Updated ", 1))
    fake_gemini.reset()
    assert run(knowledge, bucket) == 0
    changed = set(embedding_texts(knowledge)) - before
    assert fake_gemini.embedded_texts == dict.fromkeys(changed, 1) and len(changed) == 1
    assert re.search(r"reused 639, embedded 1, removed 1", capsys.readouterr().out)


def test_a_snapshot_of_another_embedder_is_never_reused(
    gemini_env, fake_gemini, knowledge, tmp_path, capsys, monkeypatch
):
    bucket = tmp_path / "bucket"
    assert run(knowledge, bucket) == 0
    capsys.readouterr()
    monkeypatch.setenv("EMBEDDING_BACKEND", "local")
    (knowledge / "generated").rename(knowledge / "small")  # keep the local build short
    for extra in sorted((knowledge / "small").glob("*.md"))[4:]:
        extra.unlink()
    assert run(knowledge, bucket) == 0
    printed = capsys.readouterr().out
    assert "reused 0, embedded 32, removed 0" in printed
    assert "full build: snapshot" in printed and "embedding backend 'gemini'" in printed


@pytest.mark.parametrize(
    "reply, message",
    [
        (wrong_embeddings(drop=1), "came back as 99 vectors"),
        (wrong_embeddings(dimension=12), r"of \[12\] dimensions, expected 100 of 768"),
    ],
)
def test_a_wrong_shaped_reply_is_a_clear_error_and_publishes_nothing(
    gemini_env, fake_gemini, knowledge, tmp_path, capsys, reply, message
):
    fake_gemini.script([reply], method=EMBED)
    assert run(knowledge, tmp_path / "bucket") == 1
    error = capsys.readouterr().err
    assert re.search(message, error) and "Traceback" not in error
    assert read_latest(LocalStorage(tmp_path / "bucket")).generation == 0
