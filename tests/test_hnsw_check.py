"""The HNSW file checks run before Chroma opens a snapshot (chatbot/bucket/hnsw.py).

Every shape here is one hnswlib's loader or search would read out of bounds; the hostile
battery (tests/test_hostile_snapshots.py) publishes the ones that crashed the process.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from chatbot.bucket.hnsw import check_hnsw_segments
from chatbot.bucket.restore import MAX_UNPACKED_BYTES, safe_extract
from chatbot.errors import SnapshotError
from tests.test_hostile_snapshots import HNSW_HEADER, hnsw_header, set_header_field

DIMENSION = 384  # the sample snapshot's embedder (all-MiniLM-L6-v2)


@pytest.fixture
def chroma_dir(built_snapshot, tmp_path) -> Path:
    path = tmp_path / "chroma"
    safe_extract(built_snapshot.archive, path)
    return path


def segment_of(path: Path) -> Path:
    (segment,) = (p for p in path.iterdir() if p.is_dir())
    return segment


def truncate(name: str, keep: float) -> Callable[[Path], None]:
    def mangle(segment: Path) -> None:
        data = (segment / name).read_bytes()
        (segment / name).write_bytes(data[: int(len(data) * keep)])

    return mangle


def first_upper_link_to_level0_node(segment: Path) -> None:
    """Point a level-1 neighbour at a node that has no level 1 (its list is not allocated)."""
    fields = hnsw_header(segment)
    count = fields[3]
    raw = bytearray((segment / "link_lists.bin").read_bytes())
    offset, sizes = 0, []
    for _ in range(count):
        (size,) = struct.unpack_from("<I", raw, offset)
        sizes.append(size)
        offset += 4 + size
    level0_only = sizes.index(0)
    offset = 0
    for size in sizes:
        if size:
            (links,) = struct.unpack_from("<H", raw, offset + 4)
            assert links >= 1
            struct.pack_into("<I", raw, offset + 8, level0_only)
            break
        offset += 4 + size
    (segment / "link_lists.bin").write_bytes(bytes(raw))


def delete_file(name: str) -> Callable[[Path], None]:
    return lambda segment: (segment / name).unlink()


def header_bytes(extra: bytes) -> Callable[[Path], None]:
    def mangle(segment: Path) -> None:
        (segment / "header.bin").write_bytes((segment / "header.bin").read_bytes() + extra)

    return mangle


def test_a_real_snapshot_passes(chroma_dir):
    check_hnsw_segments(chroma_dir, DIMENSION, MAX_UNPACKED_BYTES)


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (truncate("data_level0.bin", 1 / 3), r"data_level0\.bin has \d+ bytes, its \d+ elements"),
        (truncate("length.bin", 0.5), r"length\.bin has \d+ bytes"),
        (truncate("link_lists.bin", 0.5), r"link_lists\.bin ends"),
        (delete_file("header.bin"), r"header\.bin missing"),
        (header_bytes(b"\0"), r"header\.bin has 101 bytes, not 100"),
        (set_header_field(0, 2), r"persistence version 2"),
        (set_header_field(2, 3), r"claims \d+ elements of at most 3 "),  # max_elements < count
        (set_header_field(2, 1 << 40), r"at most \d+ bytes in all"),  # a huge allocation
        (set_header_field(4, 1000), r"record layout"),
        (set_header_field(11, 0), r"M=0"),
        (set_header_field(12, float("nan")), r"level multiplier nan"),
        (set_header_field(7, 40), r"top level 40 and entry point \d+ do not match"),
        (first_upper_link_to_level0_node, r"links a node to one that is not on that level"),
    ],
)
def test_a_corrupt_segment_is_refused_naming_what_is_wrong(chroma_dir, mangle, reason):
    mangle(segment_of(chroma_dir))
    with pytest.raises(SnapshotError, match=rf"HNSW segment [0-9a-f-]+ is corrupt: .*{reason}"):
        check_hnsw_segments(chroma_dir, DIMENSION, MAX_UNPACKED_BYTES)


def test_vectors_of_another_dimension_than_the_manifests_are_refused(chroma_dir):
    with pytest.raises(SnapshotError, match="record layout .* 768-dimensional vectors"):
        check_hnsw_segments(chroma_dir, 768, MAX_UNPACKED_BYTES)


def test_the_header_format_is_hnswlibs_100_bytes():
    assert HNSW_HEADER.size == 100
