"""Deterministic synthetic knowledge bases of any size, and questions to ask them.

The generated company ("Northwind Group") has products, teams and policies drawn from word
lists; each chunk is 120-160 words of template sentences, about the length the Markdown
chunker produces (160-word windows). Chunk ``i`` depends only on ``(seed, i)``, so the
1k corpus is a prefix of the 10k corpus, which is a prefix of the 50k one.

Vectors: embedding 50k chunks with the real model takes longer than the whole benchmark
budget, so only a pool of the first ``pool`` chunks is embedded for real; chunk ``i`` beyond
the pool gets the real vector of chunk ``i % pool`` plus seeded Gaussian noise (cosine
about 0.9 to its origin), re-normalised. The index then holds clustered, realistic-looking
vectors, and real questions still retrieve passages above the relevance threshold, which is
all the latency, size and memory figures depend on.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.documents import Chunk

SEED = 20260104
CHUNKS_PER_DOCUMENT = 8
NOISE = 0.5  # per-vector Gaussian noise norm before re-normalising: cosine ~0.89 to origin

_PRODUCT_A = (
    "Atlas Beacon Cobalt Delta Ember Falcon Granite Harbor Iris Juniper Kestrel Lumen "
    "Meridian Nimbus Orion Pioneer Quartz Raven Summit Tidal Umbra Vector Willow Zephyr"
).split()
_PRODUCT_B = "Ledger Gateway Insights Vault Relay Studio Console Pulse Forge Compass".split()
_DOC_TYPES = (
    "Service Guide",
    "Pricing Sheet",
    "Security Overview",
    "Onboarding Handbook",
    "Support Policy",
    "Integration Notes",
    "Release Notes",
    "Operations Runbook",
)
_ASPECTS = (
    "data retention",
    "uptime commitment",
    "support hours",
    "onboarding timeline",
    "pricing tiers",
    "encryption at rest",
    "single sign-on",
    "backup schedule",
    "incident response",
    "regional hosting",
    "audit logging",
    "API rate limits",
    "contract renewal",
    "training sessions",
    "migration assistance",
    "accessibility standards",
    "disaster recovery",
    "change management",
    "billing cycle",
    "customer success reviews",
)
_TEAMS = (
    "platform team",
    "customer success team",
    "security office",
    "finance department",
    "site reliability group",
    "data governance board",
    "professional services unit",
    "partner program",
)
_REGIONS = ("Frankfurt", "Dublin", "Toronto", "Singapore", "Sydney", "Sao Paulo", "Tokyo")
_DURATIONS = ("two weeks", "30 days", "one quarter", "48 hours", "five business days", "a year")
_ADJECTIVES = (
    "dedicated",
    "automated",
    "quarterly",
    "documented",
    "independent",
    "encrypted",
    "redundant",
    "named",
    "monthly",
    "contractual",
)
_NOUNS = (
    "review",
    "report",
    "dashboard",
    "checklist",
    "workshop",
    "escalation path",
    "service credit",
    "runbook",
    "status page",
    "health check",
)
_SENTENCES = (
    "The {product} {aspect} is owned by the {team}, which publishes a {adj} {noun} for every "
    "customer.",
    "Customers on the enterprise plan of {product} receive a {adj} {noun} within {duration}.",
    "For {aspect}, {product} keeps copies in {region} and a second site, tested every {duration}.",
    "Our {team} reviews the {aspect} of {product} each quarter and records the outcome in a "
    "{adj} {noun}.",
    "If a request about {aspect} cannot be resolved within {duration}, the {team} opens an "
    "escalation and informs the account owner.",
    "{product} customers can ask for a {adj} {noun} covering {aspect} at no extra cost.",
    "The standard {aspect} for {product} is {number} percent, measured over a rolling "
    "{duration} window.",
    "New {product} accounts complete onboarding in {duration}, guided by the {team} and a "
    "{adj} {noun}.",
    "Data processed by {product} stays in {region} unless the customer chooses another "
    "region in writing.",
    "Changes to {aspect} are announced {duration} in advance on the status page and by email.",
    "Pricing for {product} starts at {number} hundred euros per month, billed through the {team}.",
    "Every {product} release is checked against our {aspect} requirements before it reaches "
    "production.",
    "The {team} offers {number} hours of training on {aspect} during the first {duration}.",
    "We do not share {product} usage data with third parties, and the {team} audits this "
    "promise yearly.",
    "Questions about {aspect} that this page does not answer go to the {team} through the "
    "support portal.",
)
_QUESTIONS = (
    "What is the {aspect} for {product}?",
    "How does {product} handle {aspect}?",
    "Who is responsible for {aspect} in {product}?",
    "Tell me about the {aspect} of {product}.",
    "How long does {aspect} take for {product} customers?",
    "Where is {product} data hosted?",
    "How much does {product} cost per month?",
)


def _product(doc: int) -> str:
    a = _PRODUCT_A[doc % len(_PRODUCT_A)]
    b = _PRODUCT_B[(doc // len(_PRODUCT_A)) % len(_PRODUCT_B)]
    return f"{a} {b}"


def _fill(template: str, rng: random.Random, product: str, aspect: str) -> str:
    return template.format(
        product=product,
        aspect=aspect,
        team=rng.choice(_TEAMS),
        region=rng.choice(_REGIONS),
        duration=rng.choice(_DURATIONS),
        adj=rng.choice(_ADJECTIVES),
        noun=rng.choice(_NOUNS),
        number=rng.randint(2, 99),
    )


def generated_chunk(i: int, seed: int = SEED) -> Chunk:
    """Chunk number ``i`` of the generated knowledge base (a pure function of seed and i)."""
    rng = random.Random(seed * 1_000_003 + i)
    doc = i // CHUNKS_PER_DOCUMENT
    product = _product(doc)
    doc_type = _DOC_TYPES[doc % len(_DOC_TYPES)]
    aspect = _ASPECTS[(doc * 7 + i) % len(_ASPECTS)]
    title = f"{product} {doc_type}"
    heading = f"{title} > {aspect.capitalize()}"
    target = rng.randint(120, 160)
    words: list[str] = []
    while len(words) < target:
        words.extend(_fill(rng.choice(_SENTENCES), rng, product, aspect).split())
    text = " ".join(words[:target])
    source = f"generated/{product.lower().replace(' ', '-')}-{doc:05d}.md"
    digest = hashlib.sha1(f"{seed}\0{i}".encode()).hexdigest()[:16]
    return Chunk(digest, source, title, heading, text)


def generated_chunks(n: int, seed: int = SEED) -> list[Chunk]:
    """The first ``n`` generated chunks."""
    return [generated_chunk(i, seed) for i in range(n)]


def generated_questions(n: int, seed: int = SEED) -> list[str]:
    """``n`` distinct visitor questions about the generated company."""
    rng = random.Random(seed + 1)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        doc = rng.randrange(len(_PRODUCT_A) * len(_PRODUCT_B))
        question = rng.choice(_QUESTIONS).format(product=_product(doc), aspect=rng.choice(_ASPECTS))
        if question in seen:
            question = f"{question[:-1]} (#{len(out)})?"
        seen.add(question)
        out.append(question)
    return out


def extend_vectors(pool: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """``n`` unit vectors: the real ``pool`` first, then noisy copies of its rows."""
    if n <= len(pool):
        return pool[:n].copy()
    rng = np.random.default_rng(seed)
    out = np.empty((n, pool.shape[1]), dtype=np.float32)
    out[: len(pool)] = pool
    for start in range(len(pool), n, 10_000):
        stop = min(n, start + 10_000)
        origin = pool[np.arange(start, stop) % len(pool)]
        noise = rng.standard_normal(origin.shape).astype(np.float32)
        noise *= NOISE / np.sqrt(pool.shape[1])
        block = origin + noise
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus the benchmarks run against."""

    name: str  # "sample", "1k", "10k", "50k"
    size: int  # chunks (for the sample: known after chunking)
    generated: bool


def specs(quick: bool) -> list[CorpusSpec]:
    """The corpora of a run: the sample knowledge base and the generated sizes."""
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 50_000]
    return [CorpusSpec("sample", 0, False)] + [CorpusSpec(f"{n // 1000}k", n, True) for n in sizes]


def write_knowledge(folder: Path, n: int, seed: int = SEED) -> int:
    """Write the first ``n`` generated chunks as Markdown documents the indexer chunks back
    into exactly those ``n`` chunks (one H2 section each); returns how many documents."""
    folder.mkdir(parents=True, exist_ok=True)
    documents: dict[str, list[Chunk]] = {}
    for chunk in generated_chunks(n, seed):
        documents.setdefault(chunk.source, []).append(chunk)
    for source, chunks in documents.items():
        sections = [f"## {c.heading.split(' > ', 1)[1]}\n\n{c.text}\n" for c in chunks]
        path = folder / source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {chunks[0].title}\n\n" + "\n".join(sections), encoding="utf-8")
    return len(documents)
