"""Checking a snapshot's HNSW files before Chroma's native code reads them.

Chroma (1.5.x) loads a vector segment with hnswlib's ``loadPersistedIndex`` (chroma-core's
fork, C++), which trusts the files: a ``data_level0.bin`` shorter than its elements leaves
the rest of the buffer as uninitialised heap memory, a neighbour id past the last
element or a level above an element's own is read out of bounds, and a header whose
``max_elements`` is below its element count overflows the heap. A search over such an index
crashes the whole process with SIGSEGV (chroma issues 7238, 7069, 6979) instead of raising,
and whether it does can depend on what the heap held before, so it may crash only sometimes.
A crash cannot be refused; so every structure a load and a search read is checked here first,
against the format ``persistHeader`` / ``persistDirty`` write (Chroma writes the records of
the elements present only: the sample's data_level0.bin holds 143 of its 256 max_elements):

    header.bin        int version (1), size_t offsetLevel0, max_elements, cur_element_count,
                      size_data_per_element, label_offset, offsetData, int maxlevel,
                      uint enterpoint_node, size_t maxM, maxM0, M, double mult,
                      size_t ef_construction  (100 bytes, little-endian, packed)
    data_level0.bin   one record of size_data_per_element per element: uint32 link count
                      (low 16 bits; byte 2 holds the deleted flag), maxM0 uint32 neighbour
                      ids, the vector (dimension float32), the uint64 label
    length.bin        one float32 per element
    link_lists.bin    per element: uint32 size, then size bytes = its levels 1..n, each a
                      uint32 count and maxM uint32 neighbour ids

The checks cost a read of the files (numpy for the level-0 graph): 16-24 ms measured on a
10k-chunk, 384-dimension segment, against a cold start of seconds.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from chatbot.errors import SnapshotError

__all__ = ["HNSW_FILES", "check_hnsw_segments"]
HNSW_FILES = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin")
PERSISTENCE_VERSION = 1
_HEADER = struct.Struct("<iQQQQQQiIQQQdQ")  # HEADER_FIELDS in hnswlib/hnswalg.h: 100 bytes
_U32 = struct.Struct("<I")
_LABEL_BYTES = 8  # labeltype is size_t
_MAX_M = 1 << 12  # neighbours per node; Chroma's default is 16, counts are 16-bit
_MAX_LEVEL = 64  # levels are drawn as -ln(U) * mult: 16 with M=2 is already ~1e-5


class _Corrupt(Exception):
    """One reason a segment is refused (made a SnapshotError naming the segment)."""


def check_hnsw_segments(path: Path, dimension: int, max_bytes: int) -> None:
    """Refuse a Chroma directory holding an HNSW segment native code could misread.

    Every subdirectory of ``path`` is a vector segment Chroma may load: it must hold the
    four HNSW files, consistent with each other, with ``dimension``-float vectors, and a
    level-0 buffer (``max_elements`` records, which the loader allocates) of at most
    ``max_bytes``. SnapshotError says which file is wrong and how.
    """
    for segment in sorted(p for p in path.iterdir() if p.is_dir()):
        try:
            _check_segment(segment, dimension, max_bytes)
        except _Corrupt as exc:
            raise SnapshotError(f"its HNSW segment {segment.name} is corrupt: {exc}") from None


def _check_segment(segment: Path, dimension: int, max_bytes: int) -> None:
    names = {p.name for p in segment.iterdir()}
    missing = [name for name in HNSW_FILES if name not in names]
    if missing:
        raise _Corrupt(f"{', '.join(missing)} missing")
    if not all((segment / name).is_file() for name in HNSW_FILES):
        raise _Corrupt("an HNSW file is not a regular file")
    header = _read_header(segment / "header.bin", dimension, max_bytes)
    count, record = header["cur_element_count"], header["size_data_per_element"]
    for name, needed in (("data_level0.bin", count * record), ("length.bin", count * 4)):
        size = (segment / name).stat().st_size
        if size < needed:
            raise _Corrupt(f"{name} has {size} bytes, its {count} elements need {needed}")
    levels = _check_link_lists(segment / "link_lists.bin", header)
    _check_level0(segment / "data_level0.bin", header)
    if (
        levels.max(initial=0) != header["maxlevel"]
        or levels[header["enterpoint"]] != (header["maxlevel"])
    ):
        raise _Corrupt(
            f"header.bin's top level {header['maxlevel']} and entry point "
            f"{header['enterpoint']} do not match link_lists.bin"
        )


def _read_header(file: Path, dimension: int, max_bytes: int) -> dict:
    raw = file.read_bytes()
    if len(raw) != _HEADER.size:
        raise _Corrupt(f"header.bin has {len(raw)} bytes, not {_HEADER.size}")
    (
        version,
        offset_level0,
        max_elements,
        count,
        record,
        label_offset,
        data_offset,
        maxlevel,
        enterpoint,
        max_m,
        max_m0,
        m,
        mult,
        _ef_construction,
    ) = _HEADER.unpack(raw)
    if version != PERSISTENCE_VERSION:
        raise _Corrupt(f"header.bin has persistence version {version}, not {PERSISTENCE_VERSION}")
    if not 2 <= m <= _MAX_M or max_m != m or max_m0 != 2 * m:
        raise _Corrupt(f"header.bin has M={m}, maxM={max_m}, maxM0={max_m0}")
    if not (math.isfinite(mult) and mult > 0):
        raise _Corrupt(f"header.bin has level multiplier {mult}")
    links0 = 4 + 4 * max_m0
    expected = (0, links0, links0 + 4 * dimension, links0 + 4 * dimension + _LABEL_BYTES)
    if (offset_level0, data_offset, label_offset, record) != expected:
        raise _Corrupt(
            "header.bin's record layout (offsets "
            f"{offset_level0}, {data_offset}, {label_offset}, size {record}) is not that of "
            f"{dimension}-dimensional vectors with maxM0={max_m0} {expected}"
        )
    if not 1 <= count <= max_elements or max_elements * record > max_bytes:
        raise _Corrupt(
            f"header.bin claims {count} elements of at most {max_elements} "
            f"({record}-byte records, at most {max_bytes} bytes in all)"
        )
    if not 0 <= maxlevel <= _MAX_LEVEL or enterpoint >= count:
        raise _Corrupt(f"header.bin has top level {maxlevel}, entry point {enterpoint}")
    return {
        "cur_element_count": count,
        "size_data_per_element": record,
        "maxlevel": maxlevel,
        "enterpoint": enterpoint,
        "maxM": max_m,
        "maxM0": max_m0,
    }


def _check_links(ids: np.ndarray, counts: np.ndarray, limit: int, what: str, count: int) -> None:
    """Rows of neighbour ids, each with its count: counts within limit, ids within count."""
    if counts.size and int(counts.max()) > limit:
        raise _Corrupt(f"{what} has a node with {int(counts.max())} neighbours, more than {limit}")
    used = np.arange(ids.shape[1]) < counts[:, None]
    if used.any() and int(ids[used].max()) >= count:
        raise _Corrupt(f"{what} links to node {int(ids[used].max())} of {count}")


def _check_level0(file: Path, header: dict) -> None:
    count, record = header["cur_element_count"], header["size_data_per_element"]
    max_m0 = header["maxM0"]
    with open(file, "rb") as fh:
        data = np.frombuffer(fh.read(count * record), dtype="<u4").reshape(count, record // 4)
    counts = (data[:, 0] & 0xFFFF).astype(np.int64)  # getListCount reads an unsigned short
    _check_links(data[:, 1 : 1 + max_m0], counts, max_m0, "data_level0.bin", count)


def _check_link_lists(file: Path, header: dict) -> np.ndarray:
    """Walk link_lists.bin as loadLinkLists does; returns every element's top level."""
    count, max_m = header["cur_element_count"], header["maxM"]
    per_level = 4 + 4 * max_m  # size_links_per_element_
    raw = file.read_bytes()
    levels = np.zeros(count, dtype=np.int64)
    blocks: list[tuple[int, int]] = []  # (level, offset of an element's list on it)
    offset = 0
    for element in range(count):
        if offset + 4 > len(raw):
            raise _Corrupt(f"link_lists.bin ends at element {element} of {count}")
        (size,) = _U32.unpack_from(raw, offset)
        offset += 4
        if size % per_level or size // per_level > header["maxlevel"]:
            raise _Corrupt(f"link_lists.bin gives element {element} a list of {size} bytes")
        if offset + size > len(raw):
            raise _Corrupt(f"link_lists.bin ends inside element {element}'s list")
        levels[element] = size // per_level
        blocks.extend(
            (level, offset + (level - 1) * per_level) for level in range(1, size // per_level + 1)
        )
        offset += size
    if not blocks:
        return levels
    table = np.frombuffer(raw, dtype=np.uint8)
    block_levels, starts = np.array(blocks).T
    rows = table[starts[:, None] + np.arange(per_level)].copy().view("<u4")
    counts = (rows[:, 0] & 0xFFFF).astype(np.int64)
    ids = rows[:, 1:]
    _check_links(ids, counts, max_m, "link_lists.bin", count)
    # A search at level l reads the level-l list of every neighbour it reaches there.
    used = np.arange(max_m) < counts[:, None]
    reached = np.where(used, ids, 0).astype(np.int64)
    if (used & (levels[reached] < block_levels[:, None])).any():
        raise _Corrupt("link_lists.bin links a node to one that is not on that level")
    return levels
