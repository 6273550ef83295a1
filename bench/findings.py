"""The "where the time goes" notes at the end of docs/benchmarks.md, computed from a run.

Each note reads only results.json figures, so the explanations stay true to the numbers
beside them; a note whose section did not run is left out.
"""

from __future__ import annotations

from collections.abc import Callable

MIB = 1 << 20


def _cold_start(results: dict) -> str | None:
    section = results["sections"].get("coldstart")
    if not section:
        return None
    lines = []
    for row in section["runs"]:
        steps = row["steps_s"]
        imports = sum(v for k, v in steps.items() if k.startswith("import "))
        restore = sum(
            steps.get(k, 0.0) for k in ("LATEST + manifest", "download", "verify", "extract")
        )
        first_query = sum(v for k, v in steps.items() if k.startswith("first query"))
        framework = row["restore_median_s"] - sum(steps.values())
        lines.append(
            f"- {row['corpus']} / {row['storage']}: {row['restore_median_s']:.2f} s = imports "
            f"{imports:.2f} s (chromadb alone {steps.get('import chromadb', 0):.2f} s) + model "
            f"session and its sha256 {steps.get('model load + sha256', 0):.2f} s + LATEST, "
            f"manifest, download, verify and extract {restore:.2f} s + opening Chroma "
            f"{steps.get('open chroma', 0):.2f} s + first query {first_query:.2f} s, and "
            f"{framework:+.2f} s of process, gunicorn and HTTP around them (the difference "
            "between the end-to-end median and the step-timed probe; negative when the probe "
            "run was the slower one)."
        )
    text = (
        "**Cold start.** Where the restore's time goes (step-timed probe of the same cold path "
        "in one fresh process, plus the end-to-end median):\n\n" + "\n".join(lines) + "\n\n"
        "The floor already contains every import, so restore / floor measures only what "
        "restoring adds: creating the ONNX session (graph optimisation; switching it off "
        "makes session creation ~4x faster but queries ~3x slower, a bad trade), Chroma "
        "opening its SQLite file and HNSW segment, the download and extraction, and gunicorn "
        "forking its worker. Imports dominate both sides (chromadb is the largest single "
        "import). What would shrink the gap: load the ONNX session on a second thread while "
        "the snapshot downloads and extracts (they are independent), and VACUUM the snapshot "
        "(below) to cut extraction at 10k chunks."
    )
    return text + _reembed_bound(results, section)


def _reembed_bound(results: dict, section: dict) -> str:
    """Why a 143-chunk corpus cannot restore 10x faster than it re-embeds."""
    embed = results["sections"].get("indexing", {}).get("embedding_sample")
    sample = next(
        (r for r in section["runs"] if r["corpus"] == "sample" and r["storage"] == "local"), None
    )
    measured = {r["corpus"]: r for r in section["reembed"] if r["measured"]}
    if not embed or sample is None or "sample" not in measured:
        return ""
    floor = sample["floor_median_s"]
    embed_s = embed["seconds"]
    bound = (floor + embed_s) / floor
    per_chunk = embed["ms_per_chunk"] / 1000
    needed = 9 * floor / per_chunk
    text = (
        f"\n\nRe-embed / restore depends on the corpus size. Re-embedding pays the same "
        f"imports as the floor ({floor:.2f} s) plus the embedding ({embed_s:.1f} s for the "
        f"sample's {embed['chunks']} chunks at {embed['ms_per_chunk']:.0f} ms each in this "
        f"run), so even a restore as fast as the floor would be at most {bound:.1f}x faster "
        "than re-embedding the sample: the 10x target cannot hold for a corpus this small "
        f"while the floor stays near {floor:.1f} s (chromadb's import alone is "
        f"{sample['steps_s'].get('import chromadb', 0):.2f} s). It holds from roughly "
        f"{needed:,.0f} chunks, where embedding costs 9 floors"
    )
    if "1k" in measured:
        one_k = next(
            (r for r in section["runs"] if r["corpus"] == "1k" and r["storage"] == "local"), None
        )
        if one_k:
            text += (
                f"; at 1k chunks both sides were measured as real processes: "
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
        "and the free pages left behind once Chroma purges its embeddings queue. Running "
        "SQLite `VACUUM` on chroma.sqlite3 before packing (the indexer does not today) "
        "shrinks it: " + "; ".join(parts) + ". That cuts download, extraction and /tmp memory "
        "by the same share."
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
    default_label = next(iter(configs))
    default = configs[default_label]["uncached_extractive"]["rps"]
    best_label = max(configs, key=lambda k: configs[k]["uncached_extractive"]["rps"])
    best = configs[best_label]["uncached_extractive"]["rps"]
    if best_label == default_label or best < default * 1.1:
        verdict = (
            "No tuned setting beats the default by 10% or more: uncached answers are "
            "CPU-bound (the query embedding already runs on two ONNX threads), so more "
            "workers or threads add copies of the model and snapshot but no CPU."
        )
    else:
        verdict = (
            f"{best_label} serves {best / default - 1:.0%} more uncached answers than the "
            "default; each extra worker holds its own model and snapshot copy, so check the "
            "memory table before adopting it."
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
    text = (
        "**Memory.** " + "; ".join(parts) + ". The processes' memory barely moves with the "
        "corpus (the Python runtime, chromadb, onnxruntime and the model dominate; Chroma "
        "memory-maps the HNSW index); the snapshot in /tmp grows linearly. The total counts "
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
        f"ms). With Gemini down, all {down['requests']} requests got "
        f"{down['friendly_503s']} friendly 503s with Retry-After, in "
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
