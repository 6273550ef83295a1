"""Unanswered questions grouped by meaning, with the project's embedder.

Greedy grouping, most frequent wording first: a wording joins the group whose centroid (the
normalised mean of its members' vectors) it is most similar to when that cosine similarity
reaches ``SIMILAR``, else it starts a group. With all-MiniLM-L6-v2, paraphrases of one
question score 0.5 to 0.9 against each other and unrelated questions about one company
below 0.4 (tests/test_insights.py holds both sides); 0.55 sits between. Only the most
frequent wordings are embedded (the caller bounds them), so the work is bounded too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chatbot.answering.embeddings import Embedder

__all__ = ["SIMILAR", "Group", "group_wordings"]
SIMILAR = 0.55


@dataclass
class Group:
    """Wordings that mean the same, most frequent first, and their centroid."""

    wordings: list[tuple[str, int]] = field(default_factory=list)
    centroid: np.ndarray | None = None

    @property
    def count(self) -> int:
        """Questions in the group."""
        return sum(count for _, count in self.wordings)


def group_wordings(
    wordings: list[tuple[str, int]], embedder: Embedder, similar: float = SIMILAR
) -> list[Group]:
    """Group ``(wording, count)`` pairs by meaning; groups by count, largest first."""
    if not wordings:
        return []
    ordered = sorted(wordings, key=lambda pair: (-pair[1], pair[0]))
    vectors = embedder.embed([text for text, _ in ordered])
    groups: list[Group] = []
    sums: list[np.ndarray] = []
    centroids = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    for pair, vector in zip(ordered, vectors, strict=True):
        scores = centroids @ vector
        best = int(np.argmax(scores)) if len(scores) else -1
        if best >= 0 and scores[best] >= similar:
            groups[best].wordings.append(pair)
            sums[best] = sums[best] + vector
            centroids[best] = sums[best] / np.linalg.norm(sums[best])
        else:
            groups.append(Group([pair]))
            sums.append(vector.astype(np.float32))
            centroids = np.vstack([centroids, vector[None, :]])
    for group, centroid in zip(groups, centroids, strict=True):
        group.centroid = centroid
    return sorted(groups, key=lambda g: (-g.count, g.wordings[0][0]))
