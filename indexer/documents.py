"""Knowledge documents -> chunks that follow headings and keep their heading path.

Markdown and plain text are split on headings; HTML goes through a real parser (selectolax)
so scripts, styles and navigation never become knowledge. Long sections are cut into
overlapping word windows. A document may name its public page (Markdown front matter
``url:``, HTML ``<link rel="canonical">``); its chunks carry it as ``url``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from selectolax.lexbor import LexborHTMLParser as HTMLParser

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm"}
CHUNK_WORDS = 160
OVERLAP_WORDS = 40
MIN_WORDS = 5

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_UNDERLINE = re.compile(r"^(=+|-+)\s*$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*$\r?\n?", re.DOTALL | re.MULTILINE)
_FRONT_MATTER_URL = re.compile(r"^url:\s*[\"']?([^\"'\s]+)[\"']?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Section:
    """A run of text under one heading path."""

    headings: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage with the metadata stored next to its vector."""

    id: str
    source: str
    title: str
    heading: str
    text: str
    url: str = ""

    def embedding_text(self) -> str:
        """What gets embedded: the heading path gives a short section its context."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text

    def metadata(self) -> dict:
        meta = {"source": self.source, "title": self.title, "heading": self.heading}
        return {**meta, "url": self.url} if self.url else meta


def _public_url(candidate: str | None) -> str:
    """``candidate`` if it is an absolute http(s) URL, else empty: no other scheme is linked."""
    parts = urlsplit(candidate or "")
    return candidate if parts.scheme in ("http", "https") and parts.netloc else ""


def front_matter(text: str) -> tuple[str, str]:
    """A Markdown document's ``url:`` from its front matter, and the text without it."""
    block = _FRONT_MATTER.match(text)
    if block is None:
        return "", text
    url = _FRONT_MATTER_URL.search(block.group(1))
    return _public_url(url.group(1) if url else None), text[block.end() :]


def canonical_url(html: str) -> str:
    """An HTML page's ``<link rel="canonical" href>``, when it is an http(s) URL."""
    link = HTMLParser(html).css_first('link[rel="canonical"]')
    return _public_url(link.attributes.get("href") if link is not None else None)


def _clean(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_EMPHASIS = re.compile(r"(\*\*|__|`)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def markdown_to_text(line: str) -> str:
    """Drop Markdown markup that means nothing to a reader of a quoted passage."""
    if _TABLE_RULE.match(line):
        return ""
    stripped = line.strip()
    if stripped.startswith("|") and stripped.endswith("|"):
        cells = [c.strip() for c in stripped.strip("|").split("|")]
        line = " — ".join(c for c in cells if c) + "."
    line = _LINK.sub(r"\1", line)
    return _EMPHASIS.sub("", line)


def markdown_sections(text: str) -> tuple[str | None, list[Section]]:
    """Split Markdown on ATX and setext headings; returns the first H1 as the title."""
    lines = text.splitlines()
    title: str | None = None
    path: list[tuple[int, str]] = []
    sections: list[Section] = []
    buf: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(tuple(h for _, h in path), body))
        buf.clear()

    def open_heading(level: int, heading: str) -> None:
        nonlocal title
        flush()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
        if level == 1 and title is None:
            title = heading

    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            in_fence = not in_fence
            buf.append(line)
        elif not in_fence and (m := _HEADING.match(line)):
            open_heading(len(m.group(1)), _clean(m.group(2)))
        elif (
            not in_fence
            and line.strip()
            and i + 1 < len(lines)
            and _UNDERLINE.match(lines[i + 1])
            and (not buf or not buf[-1].strip())
        ):
            open_heading(1 if lines[i + 1].startswith("=") else 2, _clean(line))
            i += 1
        else:
            buf.append(line if in_fence else markdown_to_text(line))
        i += 1
    flush()
    return title, sections


_BLOCKS = "h1, h2, h3, h4, h5, h6, p, li, td, th, dt, dd, blockquote, pre, figcaption"


def html_sections(html: str) -> tuple[str | None, list[Section]]:
    """Split an HTML page on its headings, ignoring script, style, nav, header and footer."""
    tree = HTMLParser(html)
    title_node = tree.css_first("title")
    title = _clean(title_node.text()) if title_node else None
    for node in tree.css("script, style, noscript, template, nav, header, footer, svg, form"):
        node.decompose()
    body = tree.css_first("main") or tree.body or tree.root
    if body is None:
        return title, []
    path: list[tuple[int, str]] = []
    sections: list[Section] = []
    buf: list[str] = []

    def flush() -> None:
        text = "\n".join(buf).strip()
        if text:
            sections.append(Section(tuple(h for _, h in path), text))
        buf.clear()

    for node in body.css(_BLOCKS):
        # Nested blocks (a <p> inside an <li>) are read once, through their outermost block.
        parent = node.parent
        nested = False
        while parent is not None and parent is not body:
            if parent.tag in {"p", "li", "td", "th", "dd", "blockquote", "pre"}:
                nested = True
                break
            parent = parent.parent
        if nested:
            continue
        text = _clean(node.text(separator=" "))
        if not text:
            continue
        if node.tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            level = int(node.tag[1])
            flush()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, text))
            if title is None and level == 1:
                title = text
        else:
            buf.append(f"- {text}" if node.tag == "li" else text)
    flush()
    return title, sections


def text_sections(text: str) -> tuple[str | None, list[Section]]:
    """Plain text: the first non-empty line is the title; blank-line paragraphs stay together."""
    stripped = text.strip()
    if not stripped:
        return None, []
    first = stripped.splitlines()[0].strip()
    return first[:120], [Section((), stripped)]


def _windows(words: list[str], size: int, overlap: int) -> list[list[str]]:
    if len(words) <= size:
        return [words]
    step = size - overlap
    out = []
    for start in range(0, len(words), step):
        out.append(words[start : start + size])
        if start + size >= len(words):
            break
    return out


def chunk_document(
    source: str, raw: str, chunk_words: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS
) -> list[Chunk]:
    """Chunk one document; ``source`` is its path relative to the knowledge folder."""
    suffix = Path(source).suffix.lower()
    url = ""
    if suffix in {".html", ".htm"}:
        title, sections = html_sections(raw)
        url = canonical_url(raw)
    elif suffix == ".txt":
        title, sections = text_sections(raw)
    else:
        url, raw = front_matter(raw)
        title, sections = markdown_sections(raw)
    title = title or Path(source).stem.replace("-", " ").replace("_", " ").title()
    chunks: list[Chunk] = []
    for section in sections:
        headings = section.headings
        if headings and headings[0] == title:
            headings = headings[1:]
        heading = " > ".join((title, *headings))
        # Paragraph breaks become spaces in the windows; the heading path carries structure.
        words = section.text.split()
        if len(words) < MIN_WORDS and not headings:
            continue
        for window in _windows(words, chunk_words, overlap):
            text = " ".join(window)
            digest = hashlib.sha1(f"{source}\0{heading}\0{len(chunks)}\0{text}".encode())
            chunks.append(Chunk(digest.hexdigest()[:16], source, title, heading, text, url))
    return chunks


def load_knowledge(root: Path) -> list[tuple[str, str]]:
    """(relative path, text) of every supported file under ``root``, sorted for determinism."""
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
    )
    return [
        (p.relative_to(root).as_posix(), p.read_text(encoding="utf-8", errors="replace"))
        for p in files
    ]


def chunk_knowledge(root: Path) -> tuple[list[Chunk], int]:
    """All chunks of a knowledge folder, and how many documents they came from."""
    documents = load_knowledge(root)
    chunks = [c for source, raw in documents for c in chunk_document(source, raw)]
    return chunks, len(documents)
