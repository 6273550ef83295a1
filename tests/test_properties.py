"""Properties of the pure pieces, checked on generated inputs (Hypothesis).

Client IP resolution, cache key normalisation, chunking, archive member names and SSE
framing: each property is what the rest of the system relies on, whatever the input.
"""

from __future__ import annotations

import ipaddress
import json
import tarfile
from pathlib import Path, PurePosixPath

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chatbot.answering.cache import cache_key, normalize
from chatbot.bucket.restore import _check_member
from chatbot.errors import SnapshotError
from chatbot.web.chat import sse
from chatbot.web.ratelimit import client_ip
from indexer.documents import MIN_WORDS, _windows, chunk_document

ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
# What a client may write into X-Forwarded-For before our proxies append theirs.
forged = st.lists(st.text(alphabet=st.characters(exclude_characters=","), max_size=20))
words = st.from_regex(r"[a-z]{1,8}", fullmatch=True)


# -- client IP ------------------------------------------------------------------------------------


@given(peer=ips, client_part=forged, trusted=st.lists(ips, min_size=1, max_size=4), data=st.data())
def test_the_client_ip_is_the_entry_our_proxies_appended(peer, client_part, trusted, data):
    hops = data.draw(st.integers(1, len(trusted)))
    header = ", ".join([*client_part, *trusted])
    assert client_ip(peer, header, hops) == str(ipaddress.ip_address(trusted[-hops]))


@given(peer=ips, header=st.one_of(st.none(), st.text(max_size=60)), hops=st.integers(-2, 3))
def test_the_client_ip_is_always_an_address_or_the_peer(peer, header, hops):
    ip = client_ip(peer, header, hops)
    if hops <= 0:
        assert ip == peer
    else:
        ipaddress.ip_address(ip)  # whatever a client sends, never anything but an address


@given(trusted=ips, port=st.integers(1, 65535), client_part=forged)
def test_a_port_on_the_trusted_entry_does_not_change_the_client(trusted, port, client_part):
    entry = f"[{trusted}]:{port}" if ":" in trusted else f"{trusted}:{port}"
    assert client_ip("10.0.0.1", ", ".join([*client_part, entry]), 1) == trusted


# -- cache keys -----------------------------------------------------------------------------------

spacing = st.sampled_from([" ", "  ", "\t", "\n", " \r\n "])


@given(st.lists(words, min_size=1, max_size=8), st.data())
def test_spelling_variants_of_one_question_share_a_key(tokens, data):
    spaced = "".join(f"{data.draw(spacing)}{t}" for t in tokens) + data.draw(spacing)
    shouted = "".join(c.upper() if data.draw(st.booleans()) else c for c in spaced)
    assert cache_key(shouted, "v1", 3) == cache_key(" ".join(tokens), "v1", 3)
    assert normalize(normalize(shouted)) == normalize(shouted) == " ".join(tokens)


@given(st.text(max_size=40), st.text(max_size=40))
def test_different_questions_have_different_keys(a, b):
    assume(normalize(a) != normalize(b))
    assert cache_key(a, "v1", 0) != cache_key(b, "v1", 0)


@given(st.text(max_size=40), st.integers(0, 10**6), st.integers(0, 10**6))
def test_keys_are_scoped_by_snapshot_and_epoch(question, epoch, other_epoch):
    assume(epoch != other_epoch)
    assert cache_key(question, "v1", epoch) != cache_key(question, "v1", other_epoch)
    assert cache_key(question, "v1", epoch) != cache_key(question, "v2", epoch)


# -- chunking -------------------------------------------------------------------------------------


def _joined(windows: list[list[str]], overlap: int) -> list[str]:
    out = list(windows[0])
    for window in windows[1:]:
        out += window[overlap:]
    return out


@given(st.lists(words, min_size=1, max_size=400), st.integers(2, 60), st.data())
def test_windows_lose_no_word_and_overlap_as_configured(tokens, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    windows = _windows(tokens, size, overlap)
    assert all(1 <= len(w) <= size for w in windows)
    assert _joined(windows, overlap) == tokens
    for before, after in zip(windows, windows[1:], strict=False):
        assert before[-overlap:] == after[:overlap] if overlap else True
        assert len(before) == size  # only the last window may be short


sections = st.lists(
    st.tuples(
        st.from_regex(r"[A-Z][a-z]{2,10}( [a-z]{2,8}){0,2}", fullmatch=True),
        st.lists(words, min_size=MIN_WORDS, max_size=300),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda section: section[0],
)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(title=st.from_regex(r"[A-Z][a-z]{2,12}", fullmatch=True), body=sections)
def test_markdown_chunks_keep_every_word_and_their_headings(title, body):
    document = f"# {title}\n\n" + "".join(
        f"## {heading}\n\n{' '.join(text)}\n\n" for heading, text in body
    )
    chunks = chunk_document("guide.md", document, chunk_words=40, overlap=10)
    assert {c.title for c in chunks} == {title}
    for heading, text in body:
        mine = [c for c in chunks if c.heading == f"{title} > {heading}"]
        assert mine, heading
        assert _joined([c.text.split() for c in mine], 10) == text
    assert len({c.id for c in chunks}) == len(chunks)


# -- archive member names -------------------------------------------------------------------------

parts = st.sampled_from(["a", "b.txt", "..", ".", "", "...", "..a", "c\\..", "/"])


@given(st.lists(parts, min_size=1, max_size=6), st.booleans())
def test_an_accepted_member_never_lands_outside_the_snapshot(names, absolute):
    name = ("/" if absolute else "") + "/".join(names)
    assume(name.strip("/"))
    member = tarfile.TarInfo(name)
    dest = Path("/srv/snapshots/v1")
    try:
        _check_member(member)
    except SnapshotError:
        return
    target = dest.joinpath(*PurePosixPath(member.name).parts)
    assert target.resolve().is_relative_to(dest)


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]
)
def test_links_and_devices_are_refused_whatever_their_name(kind):
    member = tarfile.TarInfo("chroma.sqlite3")
    member.type = kind
    with pytest.raises(SnapshotError, match="not a regular file or directory"):
        _check_member(member)


# -- SSE framing ----------------------------------------------------------------------------------


def parse(frames: bytes, cut: int) -> list[tuple[str, dict]]:
    """Parse SSE bytes the way a spec-following client does, from two arbitrary pieces."""
    lines, events = SSELineDecoder(), SSEDecoder()
    text = frames.decode()
    out = []
    for line in [*lines.decode(text[:cut]), *lines.decode(text[cut:]), *lines.flush()]:
        event = events.decode(line)
        if event is not None:
            out.append((event.event, json.loads(event.data)))
    return out


@settings(max_examples=200)
@given(st.lists(st.text(max_size=30), max_size=6), st.data())
def test_every_delta_reaches_the_client_intact(texts, data):
    events = [
        ("meta", {"answer_id": "a" * 16, "sources": [], "snapshot": "v1", "cached": False}),
        *[("delta", {"text": text}) for text in texts],
        ("done", {"status": "success", "answer_id": "a" * 16, "cached": False}),
    ]
    frames = b"".join(sse(iter(events)))
    cut = data.draw(st.integers(0, len(frames.decode())))
    assert parse(frames, cut) == events
