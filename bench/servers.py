"""The processes the benchmarks talk to: the shared harness, with the rate limits lifted.

Every process runs on 127.0.0.1 (harness/processes.py): ``chat_server`` is a real
functions-framework process serving functions/chat/main.py, or another source;
``FakeGeminiProcess`` and ``HttpClient`` come from the harness as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.processes import (
    CHAT_SOURCE,
    CONFIG_VARS,
    ROOT,
    FakeGeminiProcess,
    FunctionProcess,
    HttpClient,
    child_env,
)

__all__ = [
    "ROOT",
    "FakeGeminiProcess",
    "FunctionProcess",
    "HttpClient",
    "bench_env",
    "chat_server",
    "child_env",
    "clear_config_environment",
]
UNLIMITED = "1000000/minute"


def clear_config_environment() -> None:
    """Forget every configuration variable of this process, so none leaks into a child."""
    for name in CONFIG_VARS:
        os.environ.pop(name, None)


def bench_env(**overrides: str | int | float | Path) -> dict[str, str]:
    """A benchmark server's settings: no rate limit gets in the way of a measurement."""
    return {
        "PYTHONDONTWRITEBYTECODE": "1",
        "RATE_LIMIT_CHAT": UNLIMITED,
        "RATE_LIMIT_INFO": UNLIMITED,
        "RATE_LIMIT_STATS": UNLIMITED,
        **{key: str(value) for key, value in overrides.items()},
    }


def chat_server(env: dict[str, str], log_file: Path, source: Path = CHAT_SOURCE) -> FunctionProcess:
    """A chat function process (not started yet) with ``env`` on top of this environment."""
    return FunctionProcess("chat", source, env, log_file)
