"""Schemathesis fuzzes a live chat function against its own /openapi.json.

A real functions-framework process serves the sample snapshot with Gemini answered by the
fake server, so /chat runs the whole pipeline (validate, limit, cache, embed, retrieve,
generate). Schemathesis's CLI (`st run`) generates valid and invalid requests from the
document and runs its checks on every response: no 5xx, every status, header, content type
and body as documented, invalid input rejected with a 4xx, undocumented methods answered 405
with Allow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.processes import FunctionProcess
from tests.conftest import CHAT_SOURCE

ST = Path(sys.executable).parent / "st"
UNLIMITED = "100000/minute"

# Checks that make no sense for this API, and why:
EXCLUDED_CHECKS = [
    # The schema says "a string of 1..MAX_MESSAGE_CHARS characters"; the service also rejects
    # a message that is nothing but control or format characters (str.isprintable), which
    # JSON Schema cannot express, so such schema-valid messages rightly get a 400.
    "positive_data_acceptance",
    # Stateful checks for resources created and deleted through the API; this API has none.
    "use_after_free",
    "ensure_resource_availability",
    # Authorization checks; the chat function is public and declares no security scheme.
    "ignored_auth",
    "object_level_authorization",
]


@pytest.fixture
def live_chat(bucket, tmp_path, fake_gemini):
    """The chat function on loopback, limits raised so the fuzzer is never throttled."""
    env = {
        "SNAPSHOT_URI": bucket.uri,
        "SNAPSHOT_DIR": str(tmp_path / "snap"),
        "GOOGLE_API_KEY": "test-key",
        "GEMINI_BASE_URL": fake_gemini.url,
        "RATE_LIMIT_CHAT": UNLIMITED,
        "RATE_LIMIT_INFO": UNLIMITED,
        "RATE_LIMIT_STATS": UNLIMITED,
        "RATE_LIMIT_FEEDBACK": UNLIMITED,
        "LOG_LEVEL": "WARNING",
    }
    with FunctionProcess("chat", CHAT_SOURCE, env, tmp_path / "chat.log") as proc:
        proc.wait_healthy()
        yield proc


def test_the_live_api_keeps_its_openapi_contract(live_chat, fake_gemini, tmp_path):
    command = [
        str(ST),
        "run",
        f"{live_chat.url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "100",
        "--seed",
        "20260104",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",  # no example database: nothing is left behind
        "--no-color",
    ]
    # cwd=tmp_path: Schemathesis and Hypothesis write their working folders there, not the repo.
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"schemathesis found problems:\n{report}\n{live_chat.log()[-3000:]}"
    assert "Test cases:" in run.stdout, report
    assert fake_gemini.generate_calls > 0, "no generated question reached Gemini"
    assert "Traceback" not in live_chat.log(), live_chat.log()[-3000:]
