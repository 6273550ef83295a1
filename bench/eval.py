"""`make eval`: retrieval quality of the sample knowledge base, written to docs/eval.md.

Builds the snapshot of knowledge/ with the real indexer into a temporary directory, opens
the packed copy as a chat instance would, embeds each question of eval/questions.jsonl with
the same embedder, and checks where the expected source file first appears among the
retrieved passages: hit@1, hit@k (k = the chat function's TOP_K default), and MRR over the
top 10. Questions whose best passage falls under the relevance threshold would get the
"I don't know" answer; they are counted too.

Follow-up conversations (eval/conversations.jsonl) are run on the same snapshot twice: the
raw follow-up alone, and the standalone question of the offline rule
(chatbot/answering/conversation.py ``offline_standalone``). As a check that the rule leaves
standalone questions alone, each question of eval/questions.jsonl is also run after an
unrelated earlier turn. Reports; always exits 0.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chatbot.answering.conversation import Turn, offline_standalone
from chatbot.answering.embeddings import OnnxEmbedder
from chatbot.answering.retrieval import KnowledgeIndex, Passage
from chatbot.bucket.restore import safe_extract
from chatbot.config import Settings
from indexer.build import build_from_folder

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "eval" / "questions.jsonl"
CONVERSATIONS = ROOT / "eval" / "conversations.jsonl"
KNOWLEDGE = ROOT / "knowledge"
DOC = ROOT / "docs" / "eval.md"
MRR_DEPTH = 10


@dataclass(frozen=True)
class Case:
    """One evaluation question, the source it should come from, and what was retrieved."""

    question: str
    source: str
    passages: list[Passage]

    @property
    def rank(self) -> int | None:
        """1-based rank of the first passage from the expected source, None if absent."""
        for i, passage in enumerate(self.passages, start=1):
            if passage.source == self.source:
                return i
        return None


def load_questions(path: Path = QUESTIONS) -> list[tuple[str, str]]:
    """(question, source) pairs from a JSON-lines file."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            pairs.append((row["question"], row["source"]))
    return pairs


@dataclass(frozen=True)
class Conversation:
    """A labeled follow-up: the earlier turns, the follow-up, and the file that answers it."""

    id: str
    history: list[Turn]
    question: str
    source: str


def load_conversations(path: Path = CONVERSATIONS) -> list[Conversation]:
    """The follow-up conversations of a JSON-lines file."""
    conversations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            history = [Turn(t["role"], t["content"]) for t in row["history"]]
            conversations.append(
                Conversation(row["id"], history, row["question"], row["expected_source"])
            )
    return conversations


def unrelated_turns(pairs: list[tuple[str, str]]) -> list[tuple[str, list[Turn]]]:
    """Each standalone question after an earlier question from another file (the no-harm check).

    The earlier question is the one half the list away (the file is grouped by source), or
    the next one after it from a different source.
    """
    n = len(pairs)
    out = []
    for i, (question, source) in enumerate(pairs):
        j = (i + n // 2) % n
        while pairs[j][1] == source:
            j = (j + 1) % n
        history = [Turn("user", pairs[j][0]), Turn("assistant", "Here is what I found.")]
        out.append((question, history))
    return out


def evaluate(
    index: KnowledgeIndex, embedder: OnnxEmbedder, pairs: list[tuple[str, str]]
) -> list[Case]:
    """Retrieve the top MRR_DEPTH passages for every question."""
    vectors = embedder.embed([q for q, _ in pairs])
    return [
        Case(question, source, index.query(vector, MRR_DEPTH))
        for (question, source), vector in zip(pairs, vectors, strict=True)
    ]


def metrics(cases: list[Case], k: int, min_relevance: float) -> dict:
    """hit@1, hit@k, MRR@10 and how many questions fall under the relevance threshold."""
    n = len(cases)
    ranks = [c.rank for c in cases]
    return {
        "questions": n,
        "k": k,
        "hit_at_1": sum(1 for r in ranks if r == 1) / n,
        "hit_at_k": sum(1 for r in ranks if r is not None and r <= k) / n,
        "mrr_at_10": sum(1 / r for r in ranks if r is not None) / n,
        "below_threshold": sum(
            1 for c in cases if not c.passages or c.passages[0].score < min_relevance
        ),
        "min_relevance": min_relevance,
    }


def _miss_rows(cases: list[Case], k: int) -> list[str]:
    rows = []
    for case in cases:
        rank = case.rank
        if rank is not None and rank <= k:
            continue
        top = case.passages[0] if case.passages else None
        got = f"{top.source} ({top.heading}, {top.score:.2f})" if top else "nothing"
        rows.append(
            f"| {case.question} | {case.source} | {rank if rank else f'> {MRR_DEPTH}'} | {got} |"
        )
    return rows


def _near_miss_rows(cases: list[Case], k: int) -> list[str]:
    rows = []
    for case in cases:
        rank = case.rank
        if rank is None or rank == 1 or rank > k:
            continue
        top = case.passages[0]
        rows.append(
            f"| {case.question} | {case.source} | {rank} | {top.source} ({top.score:.2f}) |"
        )
    return rows


def _rank_text(rank: int | None) -> str:
    return str(rank) if rank else f"> {MRR_DEPTH}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _follow_up_miss_rows(
    conversations: list[Conversation], raw: list[Case], rule: list[Case], k: int
) -> list[str]:
    rows = []
    for conv, before, after in zip(conversations, raw, rule, strict=True):
        rank = after.rank
        if rank is not None and rank <= k:
            continue
        top = after.passages[0] if after.passages else None
        got = f"{top.source} ({top.score:.2f})" if top else "nothing"
        rows.append(
            f"| {conv.id} | {_cell(conv.question)} | {_cell(after.question)} | {conv.source} | "
            f"{_rank_text(before.rank)} | {_rank_text(rank)} | {got} |"
        )
    return rows


def _follow_up_section(follow: dict, k: int) -> list[str]:
    raw, rule, guard = follow["raw"], follow["rule"], follow["guard"]
    lines = [
        "## Follow-up conversations",
        "",
        f"Each of the {raw['questions']} conversations of `eval/conversations.jsonl` ends with a "
        'follow-up that is ambiguous alone ("how much does it cost?", "and in Berlin?"); its '
        "expected source is set by the earlier turns. It is retrieved as the raw follow-up, "
        "and as the standalone question of the offline rule (`offline_standalone` in "
        "`chatbot/answering/conversation.py`: the previous user question's subject appended). "
        "Gemini's rewrite, when configured, is not measured here.",
        "",
        "| metric | raw follow-up | offline_standalone | change |",
        "| --- | --- | --- | --- |",
        f"| hit@1 | {raw['hit_at_1']:.1%} | {rule['hit_at_1']:.1%} | "
        f"{(rule['hit_at_1'] - raw['hit_at_1']) * 100:+.1f} pt |",
        f"| hit@{k} (TOP_K) | {raw['hit_at_k']:.1%} | {rule['hit_at_k']:.1%} | "
        f"{(rule['hit_at_k'] - raw['hit_at_k']) * 100:+.1f} pt |",
        f"| MRR@{MRR_DEPTH} | {raw['mrr_at_10']:.3f} | {rule['mrr_at_10']:.3f} | "
        f"{rule['mrr_at_10'] - raw['mrr_at_10']:+.3f} |",
        f"| follow-ups the rule rewrote | | {follow['rewritten']} of {raw['questions']} | |",
        "",
        f"No-harm check: each of the {guard['questions']} standalone questions of "
        "`eval/questions.jsonl`, asked after an unrelated earlier question, is rewritten by "
        f"the rule {guard['rewritten']} time(s); hit@{k} {guard['hit_at_k']:.1%} "
        f"(alone: {follow['alone_hit_at_k']:.1%}).",
        "",
        f"### Where the rule still misses (expected source not in the top {k})",
        "",
    ]
    misses = follow["miss_rows"]
    if misses:
        lines += [
            "| id | follow-up | standalone (rule) | expected | raw rank | rule rank | "
            "retrieved first (score) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *misses,
        ]
    else:
        lines.append("None.")
    return lines


def markdown(result: dict, cases: list[Case], seconds: float, follow: dict | None = None) -> str:
    """docs/eval.md."""
    k = result["k"]
    lines = [
        "# Retrieval evaluation",
        "",
        f"Generated by `make eval` on {datetime.now(UTC).isoformat(timespec='seconds')} "
        f"({seconds:.0f} s). The sample knowledge base is built with the real indexer "
        f"({result['chunks']} chunks from {result['documents']} documents, "
        f"{result['model']}), and each question of `eval/questions.jsonl` is embedded with the "
        "same model and run against the packed snapshot. A question is a hit when a passage "
        "from its expected source file is retrieved.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| questions | {result['questions']} |",
        f"| hit@1 | {result['hit_at_1']:.1%} |",
        f"| hit@{k} (TOP_K, what the answerer sees) | {result['hit_at_k']:.1%} |",
        f"| MRR@{MRR_DEPTH} | {result['mrr_at_10']:.3f} |",
        f"| best passage below MIN_RELEVANCE {result['min_relevance']} (answered \"I don't "
        f'know") | {result["below_threshold"]} |',
        "",
        f"## Misses (expected source not in the top {k})",
        "",
    ]
    misses = _miss_rows(cases, k)
    if misses:
        lines += [
            "| question | expected | rank | retrieved first (section, score) |",
            "| --- | --- | --- | --- |",
            *misses,
        ]
    else:
        lines.append("None.")
    near = _near_miss_rows(cases, k)
    lines += ["", f"## Found, but not first (rank 2-{k})", ""]
    if near:
        lines += [
            "| question | expected | rank | retrieved first (score) |",
            "| --- | --- | --- | --- |",
            *near,
        ]
    else:
        lines.append("None.")
    if follow is not None:
        lines += ["", *_follow_up_section(follow, k)]
    return "\n".join(lines) + "\n"


def follow_ups(
    index: KnowledgeIndex,
    embedder: OnnxEmbedder,
    conversations: list[Conversation],
    pairs: list[tuple[str, str]],
    alone: list[Case],
    k: int,
    min_relevance: float,
) -> dict:
    """Raw follow-ups against the rule's standalone questions, and the no-harm check."""
    raw = evaluate(index, embedder, [(c.question, c.source) for c in conversations])
    rewritten = [offline_standalone(c.question, c.history) for c in conversations]
    rule = evaluate(
        index, embedder, [(q, c.source) for q, c in zip(rewritten, conversations, strict=True)]
    )
    guarded = [offline_standalone(q, h) for q, h in unrelated_turns(pairs)]
    guard = evaluate(index, embedder, [(q, s) for q, (_, s) in zip(guarded, pairs, strict=True)])
    guard_metrics = metrics(guard, k, min_relevance)
    guard_metrics["rewritten"] = sum(
        1 for q, (original, _) in zip(guarded, pairs, strict=True) if q != original
    )
    return {
        "raw": metrics(raw, k, min_relevance),
        "rule": metrics(rule, k, min_relevance),
        "rewritten": sum(
            1 for q, c in zip(rewritten, conversations, strict=True) if q != c.question
        ),
        "guard": guard_metrics,
        "alone_hit_at_k": metrics(alone, k, min_relevance)["hit_at_k"],
        "miss_rows": _follow_up_miss_rows(conversations, raw, rule, k),
    }


def main() -> int:
    started = time.perf_counter()
    settings = Settings.from_env({})
    pairs = load_questions()
    conversations = load_conversations()
    embedder = OnnxEmbedder()
    with tempfile.TemporaryDirectory(prefix="romega-eval-") as tmp:
        built = build_from_folder(KNOWLEDGE, embedder, Path(tmp) / "built", progress=False)
        path = Path(tmp) / "restored"
        safe_extract(built.archive, path)
        index = KnowledgeIndex(path)
        try:
            cases = evaluate(index, embedder, pairs)
            follow = follow_ups(
                index,
                embedder,
                conversations,
                pairs,
                cases,
                settings.top_k,
                settings.min_relevance,
            )
        finally:
            index.close()
    result = metrics(cases, settings.top_k, settings.min_relevance)
    result.update(
        chunks=built.manifest.chunks,
        documents=built.manifest.data["counts"]["documents"],
        model=built.manifest.embedding["model"],
    )
    seconds = time.perf_counter() - started
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(markdown(result, cases, seconds, follow))
    k = result["k"]
    print(
        f"eval: {result['questions']} questions, hit@1 {result['hit_at_1']:.1%}, "
        f"hit@{k} {result['hit_at_k']:.1%}, MRR@{MRR_DEPTH} {result['mrr_at_10']:.3f}, "
        f"{result['below_threshold']} below the relevance threshold"
    )
    for row in _miss_rows(cases, k):
        print("  miss:", row.strip("| ").replace(" | ", " -> ", 1))
    raw, rule, guard = follow["raw"], follow["rule"], follow["guard"]
    print(
        f"follow-ups: {raw['questions']} conversations, hit@1 {raw['hit_at_1']:.1%} raw -> "
        f"{rule['hit_at_1']:.1%} standalone, hit@{k} {raw['hit_at_k']:.1%} -> "
        f"{rule['hit_at_k']:.1%}, MRR@{MRR_DEPTH} {raw['mrr_at_10']:.3f} -> "
        f"{rule['mrr_at_10']:.3f}; the rule rewrote {follow['rewritten']}"
    )
    print(
        f"no-harm check: {guard['rewritten']} of {guard['questions']} standalone questions "
        f"rewritten after an unrelated turn, hit@{k} {guard['hit_at_k']:.1%}"
    )
    for row in follow["miss_rows"]:
        print("  follow-up miss:", row.strip("| ").split(" | ")[0])
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
