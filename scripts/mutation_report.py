"""`make mutation`'s report: the score per module after scripts/mutation.py, into docs/mutation.md.

A surviving mutant is either a gap in the tests or equivalent (no test can tell it from the
original: a default argument that changes nothing, a log string). The equivalent ones are
listed, each with why, in scripts/mutation-equivalents.json by the function it is in and the
line it writes; the score counts the others:

    score = (killed + timeout) / (mutants - equivalent)

A mutant that makes its tests hang past mutmut's timeout was caught (the suite would fail), so
it counts as killed; a mutant no test reaches ("no tests") counts against the score.

A listed equivalent that no longer survives is reported too, so the list does not rot.

A whole run takes hours on 2 cores, so the results are kept: docs/mutation-results.json
holds, per group, when it was measured, its counts per module and its survivors (with the
line each writes). The groups found under build/mutation/ replace their entries there; the
others keep theirs, so running one group (`make mutation GROUPS=cache`) updates the page.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
EQUIVALENTS = ROOT / "scripts" / "mutation-equivalents.json"
OUT = ROOT / "docs" / "mutation.md"
RECORD = ROOT / "docs" / "mutation-results.json"
MUTMUT = Path(sys.executable).parent / "mutmut"
TARGET = 0.90
_NAME = re.compile(r"^\s*(?P<name>\S+): (?P<status>.+)$")
# chatbot.logs.x_truncate__mutmut_1 / chatbot.logs.xǁClassǁmethod__mutmut_3
_PARTS = re.compile(r"^(?P<module>[\w.]+?)\.x[_ǁ](?P<function>.+)__mutmut_\d+$")


def mutmut(group: Path, *args: str) -> str:
    return subprocess.run(
        [str(MUTMUT), *args], cwd=group, capture_output=True, text=True, check=True
    ).stdout


def measured(group: Path, kept: dict | None) -> dict | None:
    """One group's record from its mutmut run: counts per module, survivors with their line.

    Mutants the run did not check (``--survivors`` runs only those that survived before)
    keep their status from ``kept``, the group's earlier record; an unfinished run with no
    earlier record is None (nothing to report yet).
    """
    statuses = {}
    for line in mutmut(group, "results", "--all", "true").splitlines():
        if match := _NAME.match(line):
            statuses[match["name"]] = match["status"]
    unchecked = "not checked" in statuses.values()
    if unchecked and kept is None:
        print(f"{group.name}: unfinished and never measured before: left out", file=sys.stderr)
        return None
    modules: dict[str, Counter] = defaultdict(Counter)
    survivors = {}
    if unchecked:
        for module, counts in kept["modules"].items():
            modules[module].update(counts)
        survivors = dict(kept["survivors"])
    for name, status in statuses.items():
        if unchecked:
            if status == "not checked":
                continue
            before = survivors.pop(name, {}).get("status", "killed")
            module = _PARTS.match(name)["module"]
            modules[module][before] -= 1
        parts = _PARTS.match(name)
        modules[parts["module"] if parts else name][status] += 1
        if status not in ("killed", "timeout"):
            survivors[name] = {"status": status, "mutated": mutated_line(group, name)}
    when = (group / "mutants" / "mutmut-stats.json").stat().st_mtime
    return {
        "measured": time.strftime("%Y-%m-%d", time.gmtime(when)),
        "modules": {
            module: {status: n for status, n in sorted(c.items()) if n}
            for module, c in sorted(modules.items())
        },
        "survivors": dict(sorted(survivors.items())),
    }


def update_record() -> dict:
    """The kept record, with every group run under build/mutation/ measured afresh."""
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if WORK.is_dir():
        for group in sorted(p for p in WORK.iterdir() if (p / "mutants").is_dir()):
            if (entry := measured(group, record.get(group.name))) is not None:
                record[group.name] = entry
    RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=1, ensure_ascii=False) + "\n")
    return record


def mutated_line(group: Path, name: str) -> str:
    """The first line the mutant writes, stripped, from `mutmut show` ("removed: <line>"
    for a mutant that only deletes)."""
    diff = [
        line for line in mutmut(group, "show", name).splitlines() if line[:3] not in ("+++", "---")
    ]
    for line in diff:
        if line.startswith("+"):
            return line[1:].strip()
    removed = [line[1:].strip() for line in diff if line.startswith("-")]
    return f"removed: {removed[0]}" if removed else ""


def main() -> int:
    record = update_record()
    if not record:
        print("no mutmut results: run `make mutation` first", file=sys.stderr)
        return 1
    equivalents = json.loads(EQUIVALENTS.read_text())
    counts: dict[str, Counter] = defaultdict(Counter)
    unexplained: list[tuple[str, str]] = []
    explained: list[tuple[str, str, str]] = []
    used: set[int] = set()
    for group in record.values():
        for module, statuses in group["modules"].items():
            counts[module].update(statuses)
    survivors = {name: s for group in record.values() for name, s in group["survivors"].items()}
    for name, survivor in sorted(survivors.items()):
        parts = _PARTS.match(name)
        module = parts["module"] if parts else name
        function = parts["function"].replace("ǁ", ".") if parts else ""
        status, line = survivor["status"], survivor["mutated"]
        reason = None
        for i, entry in enumerate(equivalents):
            if entry["function"] == function and entry["mutated"] == line:
                reason, _ = entry["why"], used.add(i)
                break
        if reason is not None and status == "survived":
            counts[module]["equivalent"] += 1
            explained.append((name, line, reason))
        else:
            unexplained.append((name, f"{status}: {line}"))
    stale = [e for i, e in enumerate(equivalents) if i not in used]
    measured_on = {name: group["measured"] for name, group in sorted(record.items())}
    OUT.write_text(render(counts, unexplained, explained, stale, measured_on))
    print(OUT.read_text())
    return 0


def score(c: Counter) -> float:
    total = sum(v for k, v in c.items() if k != "equivalent")
    return (c["killed"] + c["timeout"]) / max(1, total - c["equivalent"])


def render(counts, unexplained, explained, stale, measured_on) -> str:
    rows = [
        "# Mutation testing results",
        "",
        "Generated by `make mutation` (scripts/mutation.py runs mutmut per group of modules, each",
        "against its own tests; scripts/mutation_report.py writes this page). How to read it and",
        "what it covers: docs/testing.md.",
        "",
        "Measured: " + ", ".join(f"{group} {day}" for group, day in measured_on.items()) + ".",
        "",
        "| module | mutants | killed | timeout | equivalent | survived | unreached | score |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    all_counts: Counter = Counter()
    for module in sorted(counts):
        c = counts[module]
        all_counts.update(c)
        rows.append(_row(module, c))
    rows.append(_row("**all**", all_counts))
    rows += ["", f"Target: at least {TARGET:.0%} of the non-equivalent mutants killed.", ""]
    rows += ["## Survivors not explained (gaps in the tests)", ""]
    rows += [f"- `{name}`: `{line}`" for name, line in unexplained] or ["None."]
    rows += ["", "## Equivalent survivors, and why", ""]
    rows += [f"- `{name}`: `{line}`: {why}" for name, line, why in explained] or ["None."]
    if stale:
        rows += ["", "## Listed as equivalent but no longer surviving (remove them)", ""]
        rows += [f"- `{e['function']}`: `{e['mutated']}`" for e in stale]
    return "\n".join(rows) + "\n"


def _row(module: str, c: Counter) -> str:
    total = sum(v for k, v in c.items() if k != "equivalent")
    other = c["survived"] - c["equivalent"]
    missing = total - c["killed"] - c["timeout"] - c["survived"]
    return (
        f"| {module} | {total} | {c['killed']} | {c['timeout']} | {c['equivalent']} | {other} "
        f"| {missing} | {score(c):.1%} |"
    )


if __name__ == "__main__":
    sys.exit(main())
