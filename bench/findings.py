"""The "where the time goes" notes at the end of docs/benchmarks.md, computed from a run.

Each note reads only results.json figures, so the explanations stay true to the numbers
beside them; a note whose section did not run is left out.
"""

from __future__ import annotations

from collections.abc import Callable

MIB = 1 << 20


def _restore_steps(steps: dict[str, float]) -> float:
    return sum(steps.get(k, 0.0) for k in ("LATEST + manifest", "download", "verify", "extract"))


def _cold_start(results: dict) -> str | None:
    section = results["sections"].get("coldstart")
    if not section:
        return None
    lines = []
    for row in section["runs"]:
        steps = row["steps_s"]
        imports = sum(v for k, v in steps.items() if k.startswith("import "))
        first_query = sum(v for k, v in steps.items() if k.startswith("first query"))
        framework = row["restore_median_s"] - sum(steps.values())
        lines.append(
            f"- {row['corpus']} / {row['storage']}: {row['restore_median_s']:.2f} s = imports "
            f"{imports:.2f} s (chromadb {steps.get('import chromadb', 0):.2f} s) + ONNX "
            f"session and model sha256 {steps.get('model load + sha256', 0):.2f} s + LATEST, "
            f"manifest, download, verify, extract {_restore_steps(steps):.2f} s + open Chroma "
            f"{steps.get('open chroma', 0):.2f} s + first query {first_query:.2f} s; "
            f"{framework:+.2f} s of process start, gunicorn and HTTP."
        )
    text = (
        "**Cold start.** Where the restore's time goes: step-timed probes of the same cold "
        "path in fresh processes (median per step), and the rest of the end-to-end median "
        "(process start, gunicorn forking its worker, the HTTP round trips; negative when "
        "the probe runs were slower than the median):\n\n" + "\n".join(lines) + "\n\n"
        "The floor already contains every import, so restore / floor measures only what "
        "restoring adds: the ONNX session (its graph optimisation is most of it; switching "
        "that off makes every query several times slower), Chroma opening its SQLite file "
        "and HNSW segment, download, sha256 and extraction, and gunicorn. Imports dominate "
        "both sides; chromadb is the largest."
    )
    return text + _overlap(section) + _reembed_bound(section)


def _overlap(section: dict) -> str:
    """What overlapping the independent cold-path steps would buy, where 1.3x is missed."""
    what_if = section.get("overlap")
    if not what_if:
        return ""
    over = [
        r
        for r in section["runs"]
        if r["restore_over_floor"] > 1.3 and r["corpus"] == what_if["corpus"]
    ]
    if not over:
        return ""
    times = list(what_if["median_s"].items())
    sequential = times[0][1]
    best_mode, best = min(times, key=lambda item: item[1])
    saved = sequential - best
    session_only = what_if["median_s"].get("session on a thread", best)
    gil = (
        " Importing chromadb on a thread as well does not help: an import holds the GIL."
        if what_if["median_s"].get("session and chromadb import on threads", 0)
        >= session_only - 0.03
        else ""
    )
    parts = [
        f"{row['corpus']} / {row['storage']} {row['restore_over_floor']}x -> "
        f"{(row['restore_median_s'] - saved) / row['floor_median_s']:.2f}x"
        for row in over
    ]
    return (
        " Where 1.3x is missed, the snapshot is large enough for download, sha256 and "
        "extraction to count. The chat function now builds the model session on a thread "
        "while it restores (ChatService warms the embedder at start-up); the probe below "
        "measures that reordering in isolation. Measured on the "
        f"{what_if['corpus']} snapshot (import chromadb + session + restore + open): "
        f"{sequential:.2f} s in sequence, {best:.2f} s with the {best_mode} (saving "
        f"{saved:.2f} s: " + "; ".join(parts) + ")." + gil + " Hashing while downloading "
        "instead of re-reading the archive would shave a little more; what remains grows "
        "with the snapshot "
        "(decompressing and writing it to /tmp, Chroma opening it), so at 10k chunks the "
        "1.3x target needs a smaller snapshot, not only a reordered cold path."
    )


def _reembed_bound(section: dict) -> str:
    """Why a corpus of a hundred-odd chunks cannot restore 10x faster than it re-embeds."""
    runs = {(r["corpus"], r["storage"]): r for r in section["runs"]}
    measured = {r["corpus"]: r for r in section["reembed"] if r["measured"]}
    sample = runs.get(("sample", "local"))
    if sample is None or "sample" not in measured:
        return ""
    floor = sample["floor_median_s"]
    reembed = measured["sample"]["median_s"]
    per_chunk = max(reembed - floor, 1e-3) / measured["sample"]["chunks"]
    text = (
        "\n\nRe-embed / restore depends on the corpus size. The re-embedding process pays "
        f"the same imports as the floor ({floor:.2f} s) plus chunking, embedding and indexing, "
        f"{reembed - floor:.1f} s for the sample's {measured['sample']['chunks']} chunks "
        f"({per_chunk * 1000:.0f} ms each), so even a restore as fast as the floor would be "
        f"only {reembed / floor:.1f}x faster: the 10x target cannot hold for a corpus this "
        f"small while the imports alone take {floor:.1f} s (chromadb's "
        f"{sample['steps_s'].get('import chromadb', 0):.2f} s of it). It holds from roughly "
        f"{9 * floor / per_chunk:,.0f} chunks, where re-embedding costs nine floors"
    )
    one_k = runs.get(("1k", "local"))
    if "1k" in measured and one_k:
        text += (
            "; at 1k chunks both sides were measured as real processes: "
            f"{measured['1k']['median_s']:.0f} s re-embedding vs "
            f"{one_k['restore_median_s']:.2f} s restoring "
            f"({measured['1k']['median_s'] / one_k['restore_median_s']:.0f}x)"
        )
    return text + "."


def _snapshot_size(results: dict) -> str | None:
    corpora = results["sections"].get("indexing", {}).get("corpora", {})
    rows = [(n, f) for n, f in corpora.items() if f.get("vacuumed")]
    if not rows:
        return None
    parts = []
    for name, f in rows:
        saved = 1 - f["vacuumed"]["compressed_bytes"] / f["compressed_bytes"]
        parts.append(
            f"{name}: {f['raw_bytes'] / MIB:.1f} -> {f['vacuumed']['raw_bytes'] / MIB:.1f} MiB "
            f"raw, {f['compressed_bytes'] / MIB:.1f} -> "
            f"{f['vacuumed']['compressed_bytes'] / MIB:.1f} MiB compressed ({saved:.0%} smaller)"
        )
    per_chunk = max(f["raw_bytes"] / f["chunks"] for _, f in corpora.items())
    return (
        "**Snapshot size.** A restored snapshot takes about "
        f"{per_chunk / 1024:.0f} KiB of /tmp per chunk: the 384-float vector is 1.5 KiB, the "
        "rest is Chroma's SQLite (documents, metadata, a full-text index of every document) "
        "and, before the indexer VACUUMed chroma.sqlite3, the free pages Chroma leaves "
        "once it purges its embeddings queue (a third of the file in an earlier run). The "
        "indexer now runs SQLite `VACUUM` before packing; a second VACUUM of the packed copy "
        "changes: " + "; ".join(parts) + "."
    )


def _latency(results: dict) -> str | None:
    section = results["sections"].get("latency")
    if not section:
        return None
    http = section["http"]
    cached = http["cached"]
    uncached = http["uncached_extractive"]
    gemini = http.get("uncached_gemini_50ms")
    emb = section["query_embedding"]
    text = (
        f"**Latency.** A cached answer costs {cached['server']['latency']['p50_ms']:.2f} ms "
        f"inside the function and {cached['client']['p50_ms']:.2f} ms at the client: the rest "
        "is gunicorn, Flask and the loopback round trip. An uncached answer is dominated by "
        f"the query embedding ({uncached['server']['embed']['p50_ms']:.2f} ms p50 inside the "
        f"server) and retrieval ({uncached['server']['retrieval']['p50_ms']:.2f} ms). Alone "
        f"in-process, embedding one question takes {emb['best_round_p50_ms']:.2f} ms p50 in "
        f"the best of {emb['rounds']} rounds and {emb['p50_ms']:.2f} ms over all of them: ONNX "
        "runs each query on two intra-op threads, so any other load on a 2-CPU machine "
        "stretches it, and inside the server it also competes with the request's own Python "
        "work (compare the load averages above)."
    )
    if gemini:
        overhead = gemini["server"]["generation"]["p50_ms"] - section["gemini_delay_ms"]
        text += (
            f" With the fake Gemini answering after {section['gemini_delay_ms']:.0f} ms, "
            f"generation takes {gemini['server']['generation']['p50_ms']:.1f} ms p50: "
            f"{overhead:.1f} ms of google-genai client, prompt building and loopback HTTP."
        )
    return text


def _throughput(results: dict) -> str | None:
    section = results["sections"].get("throughput")
    if not section:
        return None
    configs = section["configs"]
    cells = [
        f"{label}: {cfg['uncached_extractive']['rps']:.0f} uncached / {cfg['cached']['rps']:.0f} "
        "cached requests/s"
        for label, cfg in configs.items()
    ]
    default_label = next(k for k, v in configs.items() if not v["env"])
    verdicts = []
    for kind in ("uncached_extractive", "cached"):
        default = configs[default_label][kind]["rps"]
        best_label = max(configs, key=lambda k: configs[k][kind]["rps"])
        best = configs[best_label][kind]["rps"]
        name = kind.replace("_extractive", "").replace("_", " ")
        if best_label == default_label or best < default * 1.1:
            verdicts.append(f"for {name} answers no setting beats the default by 10%")
        else:
            verdicts.append(
                f"for {name} answers {best_label} serves {best / default - 1:.0%} more than "
                "the default"
            )
    verdict = (
        "; ".join(verdicts)[0].upper()
        + "; ".join(verdicts)[1:]
        + ". Uncached answers are CPU-bound (the query "
        "embedding already runs on two ONNX threads), so extra workers add copies of the "
        "model and snapshot (memory: see below) but no CPU; cached answers are bound by "
        "Python request handling under one GIL, which a second worker process does relieve."
    )
    return (
        "**Throughput.** " + "; ".join(cells) + ". " + verdict + " The load generator shares "
        "the same cores (its CPU share is in the table). On Cloud Functions scale comes "
        "from instances, each with the CPUs its memory size buys."
    )


def _memory(results: dict) -> str | None:
    section = results["sections"].get("memory")
    if not section:
        return None
    rows = {k: v for k, v in section.items() if isinstance(v, dict) and "chunks" in v}
    if not rows:
        return None
    parts = []
    for name, r in rows.items():
        parts.append(
            f"{name}: {r['all_processes_peak_rss_bytes'] / MIB:.0f} MiB RSS peaks + "
            f"{r['snapshot_dir_bytes'] / MIB:.0f} MiB in /tmp"
            + ("" if r["fits_1_gib"] else " (**does not fit 1 GiB**)")
        )
    ordered = sorted(rows.values(), key=lambda r: r["chunks"])
    small, large = ordered[0], ordered[-1]
    growth = (large["worker_peak_rss_bytes"] - small["worker_peak_rss_bytes"]) / max(
        1, large["chunks"] - small["chunks"]
    )
    text = (
        "**Memory.** " + "; ".join(parts) + ". The processes' memory is mostly fixed (the "
        "Python runtime, chromadb, onnxruntime and the model) and grows by about "
        f"{growth / 1024:.1f} KiB per chunk, the HNSW index (vectors and graph) Chroma loads "
        "into the worker; the snapshot in /tmp grows by its own ~13 KiB per chunk. The total "
        "counts "
        "both gunicorn processes' peaks (an upper bound: they share pages) and, for 'fits', "
        "the archive that sits next to the extracted copy while restoring. A swap to a new "
        "snapshot also holds the old and the new copy in /tmp until the old one is released."
    )
    if not all(r["fits_1_gib"] for r in rows.values()):
        text += (
            " Above 1 GiB: deploy with 2 GiB, VACUUM the snapshot (see above), or keep only "
            "the HNSW files and the documents in the snapshot."
        )
    return text


def _resilience(results: dict) -> str | None:
    section = results["sections"].get("resilience")
    if not section:
        return None
    healthy, flaky, down = section["scenarios"]
    return (
        f"**Resilience.** With 5% of Gemini calls failing, {flaky['requests_retried']} of "
        f"{flaky['requests']} requests needed a retry and {flaky['visitor_errors']} visitors "
        "saw an error: with 3 retries a visitor only fails when four independent calls fail "
        "(0.05^4, about 6 in a million). The cost is latency on the retried requests only "
        f"(p95 {healthy['latency_all']['p95_ms']:.0f} -> {flaky['latency_all']['p95_ms']:.0f} "
        f"ms). With Gemini down, {down['friendly_503s']} of {down['requests']} requests got "
        "the friendly 503 with Retry-After, in "
        f"{down['latency_all']['p50_ms']:.0f} ms p50 and {down['latency_all']['max_ms']:.0f} ms "
        "at worst: the retries' back-off (0.05 s doubling, plus jitter), well inside "
        "GENERATION_DEADLINE_SECONDS."
    )


def _environment(results: dict) -> str:
    m = results["machine"]
    return (
        "**Measurement notes.** The machine is a shared "
        f"{m['nproc']}-CPU VM: other jobs ran during the run (load averages above), which "
        "widens tails and shifts CPU-bound figures by tens of percent between runs; ratios "
        "measured within a run (restore / floor) are the robust figures. The fake Gemini runs "
        "in its own process with Nagle's algorithm disabled on its sockets (http.server "
        "writes headers and body separately, which otherwise adds a ~40 ms delayed-ACK stall "
        "to every call)."
    )


NOTES: tuple[Callable[[dict], str | None], ...] = (
    _cold_start,
    _snapshot_size,
    _latency,
    _throughput,
    _memory,
    _resilience,
)


def notes(results: dict) -> str:
    """The Markdown section explaining the run's figures."""
    paragraphs = []
    for note in NOTES:
        try:
            text = note(results)
        except (KeyError, TypeError, ZeroDivisionError, ValueError):
            text = None  # a partial run (--only, or a crashed section) lacks the figures
        if text:
            paragraphs.append(text)
    paragraphs.append(_environment(results))
    return "## Where the time and memory go\n\n" + "\n\n".join(paragraphs)
