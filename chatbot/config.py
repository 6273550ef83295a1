"""Settings: the only reader of the environment, validated once at start-up."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from limits import parse_many

from chatbot.errors import ConfigError

API_VERSION = "1.0.0"
# Every variable Settings.from_env reads (tests and benchmarks start children from none).
ENVIRONMENT_VARIABLES = (
    "GOOGLE_API_KEY",
    "PORT",
    "GEMINI_MODEL",
    "GEMINI_BASE_URL",
    "CACHE_TTL",
    "CACHE_MAX_ENTRIES",
    "MAX_RETRIES",
    "RETRY_DELAY",
    "GENERATION_DEADLINE_SECONDS",
    "GENERATION_TIMEOUT_SECONDS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "SNAPSHOT_URI",
    "SNAPSHOT_DIR",
    "EMBEDDING_BACKEND",
    "RATE_LIMIT_CHAT",
    "RATE_LIMIT_INFO",
    "RATE_LIMIT_STATS",
    "RATE_LIMIT_ADMIN",
    "RATE_LIMIT_ADMIN_WRITE",
    "TRUSTED_PROXY_HOPS",
    "MAX_MESSAGE_CHARS",
    "MAX_BODY_BYTES",
    "ALLOWED_ORIGINS",
    "ADMIN_TOKEN",
    "CONTROL_POLL_SECONDS",
    "HEARTBEAT_SECONDS",
    "K_SERVICE",
    "TOP_K",
    "MIN_RELEVANCE",
    "INSTANCE_ID",
    "GOOGLE_CLOUD_PROJECT",
    "GCP_PROJECT",
    "GCLOUD_PROJECT",
    "MAX_HISTORY_MESSAGES",
    "MAX_HISTORY_CHARS",
    "RATE_LIMIT_FEEDBACK",
    "EVENTS_FLUSH_SECONDS",
    "CONDENSE_TIMEOUT_SECONDS",
    "IPV6_PREFIX_LENGTH",
    "SOURCE_BASE_URL",
    "EMBEDDING_REQUEST_RATE",
    "EMBEDDING_TOKEN_RATE",
    "REDIS_URL",
    "REDIS_TIMEOUT_MS",
    "REDIS_CA_CERT",
)
DEFAULT_SNAPSHOT_URI = ".local/bucket"
# The shortest ADMIN_TOKEN accepted: secrets.token_urlsafe(24) is 32 characters (192 bits).
MIN_ADMIN_TOKEN_CHARS = 32


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


def _admin_token(env: Mapping[str, str]) -> str | None:
    """ADMIN_TOKEN: unset means the admin function refuses everything; a short one stops it."""
    token = env.get("ADMIN_TOKEN") or None
    if token is not None and len(token) < MIN_ADMIN_TOKEN_CHARS:
        # The length only, never the token: this message reaches the logs.
        raise ConfigError(
            f"ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters, got "
            f"{len(token)}; generate one with python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    return token


def _redis_url(env: Mapping[str, str]) -> str | None:
    """REDIS_URL: unset, or redis://[:password@]host[:port][/db] (rediss:// for TLS)."""
    url = _get(env, "REDIS_URL", "")
    if not url:
        return None
    # The message names the parts, never the URL: it may carry the AUTH string.
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("REDIS_URL is not a valid URL (its port or host is malformed)") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(
            "REDIS_URL must be redis://[:password@]host[:port][/db] or rediss://... for TLS, "
            f"got scheme {parts.scheme!r}" + ("" if parts.hostname else " and no host")
        )
    if port == 0 or parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ConfigError("REDIS_URL must name a port above 0 and a numeric database, if any")
    return url


def _redis_ca_cert(env: Mapping[str, str]) -> str | None:
    """REDIS_CA_CERT: a PEM certificate, and only beside a rediss:// REDIS_URL."""
    pem = env.get("REDIS_CA_CERT") or None
    if pem is None:
        return None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError("REDIS_CA_CERT must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
    if not _get(env, "REDIS_URL", "").startswith("rediss://"):
        raise ConfigError("REDIS_CA_CERT is set but REDIS_URL is not a rediss:// URL")
    return pem


def redis_password(url: str | None) -> str | None:
    """The password in a Redis URL, so the log redactor can mask it."""
    return urlsplit(url).password if url else None


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _get(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    value = _get(env, name, default)
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be a rate limit such as '20/minute' or '20 per 1 minute', got {value!r}"
        ) from None
    return value


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    """An absolute http(s) URL with a host, or None when unset."""
    value = _get(env, name, "")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{name} must be an http(s) URL such as https://example.com/kb, got {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every tunable of the chat and admin functions, read from the environment."""

    google_api_key: str | None = None
    gemini_model: str = "gemini-2.5-flash"
    gemini_base_url: str | None = None
    port: int = 8080  # functions-framework listens on it; validated here with the rest
    cache_ttl: int = 3600
    cache_max_entries: int = 1024
    max_retries: int = 3
    retry_delay: float = 1.0
    generation_deadline_seconds: float = 30.0
    generation_timeout_seconds: float = 20.0
    log_level: str = "INFO"
    log_format: str = "text"
    snapshot_uri: str = DEFAULT_SNAPSHOT_URI
    snapshot_dir: Path = Path(tempfile.gettempdir()) / "romega-snapshots"
    embedding_backend: str = "local"
    rate_limit_chat: str = "20/minute"
    rate_limit_info: str = "60/minute"
    rate_limit_stats: str = "30/minute"
    rate_limit_admin: str = "30/minute"
    rate_limit_admin_write: str = "5/minute"
    trusted_proxy_hops: int = 0
    max_message_chars: int = 2000
    max_body_bytes: int = 64 * 1024
    allowed_origins: tuple[str, ...] = ("*",)
    admin_token: str | None = None
    control_poll_seconds: float = 10.0
    heartbeat_seconds: float = 60.0
    top_k: int = 4
    min_relevance: float = 0.30
    project_id: str | None = None
    instance_id: str | None = None
    max_history_messages: int = 6
    max_history_chars: int = 8000
    rate_limit_feedback: str = "10/minute"
    events_flush_seconds: float = 30.0
    condense_timeout_seconds: float = 2.0
    ipv6_prefix_length: int = 64  # an IPv6 client's rate limits are those of its /N network
    source_base_url: str | None = None  # a source's public page: this + its path, if it names none
    # Pacing of the indexer's Gemini embedding requests (chatbot/answering/pacing.py).
    embedding_request_rate: str = "100/minute"
    embedding_token_rate: str = "1000000/minute"
    redis_url: str | None = None  # fleet-wide limits, cache and epoch (chatbot/shared_state/)
    redis_timeout_ms: int = 50
    redis_ca_cert: str | None = None  # PEM of the server CA for rediss:// (Memorystore)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate settings; a bad value raises ConfigError naming the variable."""
        env = os.environ if environ is None else environ
        on_cloud = bool(env.get("K_SERVICE"))
        origins = tuple(
            o.strip() for o in _get(env, "ALLOWED_ORIGINS", "*").split(",") if o.strip()
        )
        project_id = (
            env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCP_PROJECT") or env.get("GCLOUD_PROJECT")
        )
        log_level = _choice(
            env, "LOG_LEVEL", "INFO", ("debug", "info", "warning", "error", "critical")
        ).upper()
        return cls(
            google_api_key=env.get("GOOGLE_API_KEY") or None,
            gemini_model=_get(env, "GEMINI_MODEL", cls.gemini_model),
            gemini_base_url=env.get("GEMINI_BASE_URL") or None,
            port=_int(env, "PORT", 8080, minimum=1),
            cache_ttl=_int(env, "CACHE_TTL", 3600, minimum=1),
            cache_max_entries=_int(env, "CACHE_MAX_ENTRIES", 1024, minimum=1),
            max_retries=_int(env, "MAX_RETRIES", 3),
            retry_delay=_float(env, "RETRY_DELAY", 1.0),
            generation_deadline_seconds=_float(
                env, "GENERATION_DEADLINE_SECONDS", 30.0, minimum=0.1
            ),
            generation_timeout_seconds=_float(env, "GENERATION_TIMEOUT_SECONDS", 20.0, minimum=0.1),
            log_level=log_level,
            log_format=_choice(env, "LOG_FORMAT", "json" if on_cloud else "text", ("json", "text")),
            snapshot_uri=_get(env, "SNAPSHOT_URI", DEFAULT_SNAPSHOT_URI),
            snapshot_dir=Path(
                _get(env, "SNAPSHOT_DIR", str(Path(tempfile.gettempdir()) / "romega-snapshots"))
            ),
            embedding_backend=_choice(env, "EMBEDDING_BACKEND", "local", ("local", "gemini")),
            rate_limit_chat=_rate(env, "RATE_LIMIT_CHAT", "20/minute"),
            rate_limit_info=_rate(env, "RATE_LIMIT_INFO", "60/minute"),
            rate_limit_stats=_rate(env, "RATE_LIMIT_STATS", "30/minute"),
            rate_limit_admin=_rate(env, "RATE_LIMIT_ADMIN", "30/minute"),
            rate_limit_admin_write=_rate(env, "RATE_LIMIT_ADMIN_WRITE", "5/minute"),
            trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", 1 if on_cloud else 0),
            max_message_chars=_int(env, "MAX_MESSAGE_CHARS", 2000, minimum=1),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            allowed_origins=origins or ("*",),
            admin_token=_admin_token(env),
            control_poll_seconds=_float(env, "CONTROL_POLL_SECONDS", 10.0),
            heartbeat_seconds=_float(env, "HEARTBEAT_SECONDS", 60.0),
            top_k=_int(env, "TOP_K", 4, minimum=1),
            min_relevance=_float(env, "MIN_RELEVANCE", 0.30),
            project_id=project_id,
            instance_id=env.get("INSTANCE_ID") or None,
            max_history_messages=_int(env, "MAX_HISTORY_MESSAGES", 6),
            max_history_chars=_int(env, "MAX_HISTORY_CHARS", 8000),
            rate_limit_feedback=_rate(env, "RATE_LIMIT_FEEDBACK", "10/minute"),
            events_flush_seconds=_float(env, "EVENTS_FLUSH_SECONDS", 30.0, minimum=0.1),
            condense_timeout_seconds=_float(env, "CONDENSE_TIMEOUT_SECONDS", 2.0, minimum=0.1),
            ipv6_prefix_length=_int(env, "IPV6_PREFIX_LENGTH", 64, minimum=1, maximum=128),
            source_base_url=_http_url(env, "SOURCE_BASE_URL"),
            embedding_request_rate=_rate(env, "EMBEDDING_REQUEST_RATE", "100/minute"),
            embedding_token_rate=_rate(env, "EMBEDDING_TOKEN_RATE", "1000000/minute"),
            redis_url=_redis_url(env),
            redis_timeout_ms=_int(env, "REDIS_TIMEOUT_MS", 50, minimum=1, maximum=10_000),
            redis_ca_cert=_redis_ca_cert(env),
        )
