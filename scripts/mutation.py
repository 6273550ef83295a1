"""`make mutation`: mutmut over the modules that hold the invariants, each against its own tests.

mutmut reads one configuration per directory, so each group runs in its own copy of the
repository (build/mutation/<group>/, tracked files only) with a [tool.mutmut] section naming
that group's modules and tests; mutmut then runs, for each mutant, the tests of the group
that reach the mutated function. The report (scripts/mutation_report.py) reads every group.

    python scripts/mutation.py [GROUP ...]              # all groups by default
    python scripts/mutation.py --survivors GROUP ...    # again, only what survived last time

``--survivors`` reruns only the mutants a group's last run did not kill, against the
current tests: those in its copy under build/mutation/ (its tests and code refreshed; mutmut
regenerates the mutants of changed functions, which are then run too), or, without one,
those docs/mutation-results.json lists (the modules must not have changed since).
Minutes instead of the group's half hour, after writing tests for them. A whole run of
every group takes about 3 hours on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"
RECORD = ROOT / "docs" / "mutation-results.json"  # scripts/mutation_report.py keeps it

# group -> (modules to mutate, the fast tests that hold them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "cache": (
        ["chatbot/answering/cache.py"],
        [
            "tests/test_cache.py",
            "tests/test_streaming.py",
            "tests/test_shared_state.py",
            "tests/test_properties.py",
        ],
    ),
    "shared_state": (
        ["chatbot/shared_state/link.py", "chatbot/shared_state/answers.py"],
        ["tests/test_shared_state.py"],
    ),
    "ratelimit": (
        ["chatbot/web/ratelimit.py"],
        [
            "tests/test_ratelimit.py::test_client_ip",
            "tests/test_ratelimit.py::test_limit_key",
            "tests/test_ratelimit.py::test_many_distinct_ips_do_not_grow_memory_without_bound",
            "tests/test_ratelimit.py::test_a_decision_says_the_tightest_limit_and_its_headers",
            "tests/test_ratelimit.py::test_peek_does_not_count_and_hit_does",
            "tests/test_ratelimit.py::test_a_refusal_by_any_of_several_limits_refuses",
            "tests/test_ratelimit.py::test_limits_count_per_route_and_per_client_network",
            "tests/test_ratelimit.py::test_idle_clients_are_forgotten_on_the_sweep_and_count_afresh",
            "tests/test_shared_state.py",
            "tests/test_router.py",
            "tests/test_properties.py",
        ],
    ),
    "restore": (
        ["chatbot/bucket/restore.py"],
        ["tests/test_restore.py", "tests/test_hostile_snapshots.py", "tests/test_properties.py"],
    ),
    "control": (
        ["chatbot/bucket/control.py", "chatbot/bucket/following.py"],
        ["tests/test_following.py", "tests/test_admin.py"],
    ),
    "logs": (["chatbot/logs.py"], ["tests/test_logs.py", "tests/test_lazy_and_logs.py"]),
    "retry": (["chatbot/answering/retry.py"], ["tests/test_retry.py"]),
    "router": (["chatbot/web/router.py"], ["tests/test_router.py"]),
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def copy_tracked(target: Path, under: tuple[str, ...] = ()) -> None:
    """Copy the tracked files (those ``under`` these folders, if given) into ``target``."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", *under], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def prepare(group: str) -> Path:
    """A fresh copy of the tracked files, configured for ``group``."""
    modules, tests = GROUPS[group]
    target = WORK / group
    shutil.rmtree(target, ignore_errors=True)
    copy_tracked(target)
    pyproject = target / "pyproject.toml"
    text = pyproject.read_text()
    text = text[: text.index("[tool.mutmut]")] if "[tool.mutmut]" in text else text
    pyproject.write_text(
        text.rstrip()
        + "\n\n[tool.mutmut]\n"
        + 'source_paths = ["chatbot"]\n'
        + f"only_mutate = {_toml_list(modules)}\n"
        + 'also_copy = ["harness/", "indexer/", "functions/", "knowledge/", "eval/", "widget/"]\n'
        + f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        # Chroma's native runtime does not survive a fork of a process that has used it:
        # workers forked from the stats run hang, so each is forked from a clean server.
        + 'process_isolation = "forkserver"\n'
    )
    return target


def not_killed(target: Path) -> list[str]:
    """The mutants of a group's last run that its tests did not kill (nor hang)."""
    results = subprocess.run(
        [str(MUTMUT), "results"], cwd=target, capture_output=True, text=True, check=True
    ).stdout
    rows = [line.strip().split(": ", 1) for line in results.splitlines() if ": " in line]
    return [name for name, status in rows if status != "timeout"]


def run(group: str, survivors: bool = False) -> int:
    target = WORK / group
    runs: list[list[str]] = [[]]  # each a `mutmut run` (no names: every unchecked mutant)
    if not survivors:
        prepare(group)
    elif (target / "mutants").is_dir():
        # The last run's copy with today's tests and code: mutmut regenerates the mutants of
        # functions that changed (unchecked then, so the second run takes them).
        names = not_killed(target)
        copy_tracked(target, ("tests", "harness", "chatbot"))
        # mutmut measures again only which functions *new* tests reach; an edited test may
        # reach others now, so it measures them all again.
        (target / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
        runs = [names, []] if names else [[]]
    else:  # a fresh copy; the survivors the report kept (docs/mutation-results.json)
        prepare(group)
        record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        names = list(record.get(group, {}).get("survivors", {}))
        if not names:
            print(f"{group}: never measured; run it whole first", file=sys.stderr)
            return 1
        runs = [names]
    started = time.monotonic()
    code = 0
    with open(target / "mutmut.log", "w") as log:
        for names in runs:
            code = (
                code
                or subprocess.run(
                    [str(MUTMUT), "run", *names],
                    cwd=target,
                    env={
                        **os.environ,
                        "PYTHONPATH": str(target),
                        # Every mutant's tests are a pytest session of their own: the sample
                        # snapshot they need is built once per group (tests/conftest.py).
                        "ROMEGA_TEST_SNAPSHOT_CACHE": str(target / "built-snapshot"),
                    },
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ).returncode
            )
    print(f"{group}: mutmut exited {code} after {time.monotonic() - started:.0f} s", flush=True)
    return code


def main(argv: list[str]) -> int:
    survivors = "--survivors" in argv
    groups = [a for a in argv if a != "--survivors"] or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; known: {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    failed = [g for g in groups if run(g, survivors) != 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
