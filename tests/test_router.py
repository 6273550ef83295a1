"""The HTTP edge on its own (chatbot/web/router.py): error mapping, CORS, HEAD, request ids.

A Router over a few toy handlers, mounted as functions-framework mounts a function, so each
test sees exactly what the edge adds and nothing the chat service does.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import flask
import pytest

from chatbot.config import Settings
from chatbot.errors import ChatbotError, ClientError, GenerationUnavailable, Unauthorized
from chatbot.logs import JsonFormatter, annotate
from chatbot.web.router import Reply, Route, Router, anonymize


def boom(request: flask.Request) -> Reply:
    raise RuntimeError("a bug with secret detail")


def unavailable(request: flask.Request) -> Reply:
    raise GenerationUnavailable(detail="Gemini down", retry_after=7)


def refused(request: flask.Request) -> Reply:
    raise ClientError("Field 'message' is required")


def hello(request: flask.Request) -> Reply:
    return Reply({"hello": "world"}, headers={"X-Own": "1"})


ROUTES = {
    "/boom": {"GET": Route(boom, None)},
    "/unavailable": {"GET": Route(unavailable, None)},
    "/refused": {"POST": Route(refused, None)},
    "/hello": {"GET": Route(hello, "rate_limit_info")},
    "/post-only": {"POST": Route(hello, None)},
}


def echo(request: flask.Request) -> Reply:
    return Reply({"path": request.path, "method": request.method})


def raw(request: flask.Request) -> Reply:
    return Reply({"ignored": True}, raw=b"plain text", content_type="text/plain")


def streamed(request: flask.Request) -> Reply:
    annotate(chunks=2, score=0.123456)

    def events():
        yield b"data: one\n\n"
        annotate(outcome="done")
        yield b"data: two\n\n"

    return Reply({}, stream=events(), content_type="text/event-stream")


def plain_500(request: flask.Request) -> Reply:
    raise ChatbotError("store broke")


ROUTES |= {
    "/plain-500": {"GET": Route(plain_500, None)},
    "/echo": {"GET": Route(echo, None)},
    "/raw": {"GET": Route(raw, None)},
    "/stream": {"POST": Route(streamed, "rate_limit_chat")},
    "/slow-down": {"GET": Route(hello, "rate_limit_chat")},
    "/also-chat": {"GET": Route(hello, "rate_limit_chat")},
    "/hidden": {"GET": Route(hello, None, listed=False)},
}
TOKEN = "r" * 40


def authorize(request: flask.Request) -> None:
    if request.headers.get("X-Admin-Token") != TOKEN:
        raise Unauthorized()


def client(cors: bool = True, guarded: bool = False, **env: str):
    router = Router(
        Settings.from_env(env),
        ROUTES,
        index=lambda rows: {"routes": rows},
        index_rate="rate_limit_info",
        cors=cors,
        **({"authorize": authorize, "failed_auth_rate": "rate_limit_admin"} if guarded else {}),
    )
    app = flask.Flask("router-test")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "HEAD", "OPTIONS", "PUT"])
    @app.route("/<path:path>", methods=["GET", "POST", "HEAD", "OPTIONS", "PUT"])
    def every(path: str):
        return router(flask.request)

    return app.test_client()


def summary_lines(caplog) -> list[dict]:
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "request"]


def test_an_unexpected_exception_is_a_json_500_with_the_trace_in_the_logs_only(caplog):
    with caplog.at_level(logging.INFO):
        response = client().get("/boom", headers={"X-Request-Id": "abc-123"})
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error", "status": "error"}
    assert "secret detail" not in response.get_data(as_text=True)
    assert response.headers["X-Request-Id"] == "abc-123"
    crash = [r for r in caplog.records if r.getMessage() == "Unhandled error on GET /boom"]
    assert crash and crash[0].exc_info and "a bug with secret detail" in str(crash[0].exc_info[1])
    (line,) = summary_lines(caplog)
    assert line["status"] == 500 and line["route"] == "/boom" and line["method"] == "GET"


def test_a_server_side_chatbot_error_keeps_its_status_headers_and_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="chatbot.web.router"):
        response = client().get("/unavailable")
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    assert "GET /unavailable -> 503" in caplog.text


def test_a_client_error_is_its_own_status_and_not_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="chatbot.web.router"):
        response = client().post("/refused")
    assert response.status_code == 400
    assert response.get_json() == {"error": "Field 'message' is required", "status": "error"}
    assert caplog.records == []


def test_unknown_paths_and_methods(caplog):
    c = client()
    with caplog.at_level(logging.INFO):
        missing = c.get("/nowhere")
    assert missing.status_code == 404 and "see GET / for the API" in missing.get_json()["error"]
    assert summary_lines(caplog)[0]["route"] == "(unknown)"
    wrong = c.put("/hello")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, OPTIONS"


def test_a_trailing_slash_names_the_same_route():
    assert client().get("/hello/").get_json() == {"hello": "world"}


def test_head_answers_like_get_without_a_body():
    c = client()
    head = c.head("/hello")
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Type"] == "application/json" and head.headers["X-Own"] == "1"
    assert head.headers["X-RateLimit-Limit"] == "60"  # HEAD counts against GET's limit
    assert c.get("/hello").headers["X-RateLimit-Remaining"] == "58"
    post_only = c.head("/post-only")
    assert post_only.status_code == 405 and post_only.headers["Allow"] == "OPTIONS, POST"


def test_the_index_lists_routes_with_their_limits():
    rows = client().get("/").get_json()["routes"]
    assert {"method": "GET", "path": "/hello", "rate_limit": "60/minute"} in rows
    assert {"method": "GET", "path": "/boom", "rate_limit": "unlimited"} in rows


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123", True), ("a" * 64, True), ("has space", False), ("dé", False), ("", False)],
)
def test_request_ids_are_echoed_only_when_plain(given, kept):
    sent = client().get("/hello", headers={"X-Request-Id": given}).headers["X-Request-Id"]
    assert (sent == given) is kept
    assert len(sent) <= 64 and sent.replace("-", "").isalnum()


def test_a_long_request_id_is_cut_to_64_characters():
    sent = client().get("/hello", headers={"X-Request-Id": "b" * 100}).headers["X-Request-Id"]
    assert sent == "b" * 64


# -- CORS -----------------------------------------------------------------------------------------

SITE = "https://www.example.com"


def test_an_allowed_origin_is_echoed_and_the_answer_varies_by_origin():
    response = client(ALLOWED_ORIGINS=f"{SITE},https://other.example").get(
        "/hello", headers={"Origin": SITE}
    )
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert response.headers["Vary"] == "Origin"
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert "Retry-After" in exposed and "X-RateLimit-Remaining" in exposed


@pytest.mark.parametrize("origin", ["https://evil.example", None])
def test_another_origin_or_none_gets_no_grant_but_still_varies(origin):
    headers = {"Origin": origin} if origin else {}
    response = client(ALLOWED_ORIGINS=SITE).get("/hello", headers=headers)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin"


def test_any_origin_when_allowed_origins_is_a_star():
    c = client(ALLOWED_ORIGINS="*")
    response = c.get("/hello", headers={"Origin": SITE})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in response.headers
    assert "Access-Control-Allow-Origin" not in c.get("/hello").headers


def test_errors_carry_cors_headers_too():
    response = client(ALLOWED_ORIGINS=SITE).get("/boom", headers={"Origin": SITE})
    assert response.status_code == 500
    assert response.headers["Access-Control-Allow-Origin"] == SITE


def test_a_preflight_lists_the_methods_and_headers():
    response = client(ALLOWED_ORIGINS=SITE).options("/refused", headers={"Origin": SITE})
    assert response.status_code == 204 and response.get_data() == b""
    assert response.headers["Allow"] == "OPTIONS, POST"
    assert response.headers["Access-Control-Allow-Methods"] == "OPTIONS, POST"
    assert response.headers["Access-Control-Allow-Headers"] == (
        "Content-Type, X-Admin-Token, X-Request-Id"
    )
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert response.headers["Access-Control-Allow-Origin"] == SITE


def test_no_cors_headers_at_all_when_cors_is_off():
    c = client(cors=False, ALLOWED_ORIGINS=SITE)
    response = c.get("/hello", headers={"Origin": SITE})
    assert not [h for h in response.headers.keys() if h.startswith("Access-Control")]
    assert "Vary" not in response.headers
    preflight = c.options("/hello", headers={"Origin": SITE})
    assert preflight.headers["Allow"] == "GET, OPTIONS"
    assert not [h for h in preflight.headers.keys() if h.startswith("Access-Control")]


# -- the summary line -----------------------------------------------------------------------------


def test_the_summary_line_names_the_client_only_by_a_hash(caplog):
    with caplog.at_level(logging.INFO):
        client().get("/hello", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    (line,) = summary_lines(caplog)
    assert line["client"] == anonymize("203.0.113.9") and "203.0.113.9" not in json.dumps(line)
    assert line["latency_ms"] >= 0 and line["status"] == 200


def test_the_handler_gets_the_request_itself():
    assert client().get("/echo").get_json() == {"path": "/echo", "method": "GET"}


def test_a_raw_reply_is_sent_as_it_is():
    response = client().get("/raw")
    assert response.get_data() == b"plain text" and response.content_type == "text/plain"


def test_a_stream_is_sent_unbuffered_and_logged_once_at_its_end(caplog):
    with caplog.at_level(logging.INFO):
        response = client().post("/stream", environ_base={"REMOTE_ADDR": "198.51.100.4"})
        assert summary_lines(caplog) == []  # nothing logged before the body is sent
        body = response.get_data()
    assert body == b"data: one\n\ndata: two\n\n"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-RateLimit-Limit"] == "20"
    (line,) = summary_lines(caplog)
    assert (line["method"], line["route"], line["status"]) == ("POST", "/stream", 200)
    assert line["client"] == anonymize("198.51.100.4")
    assert line["chunks"] == 2 and line["score"] == 0.12 and line["outcome"] == "done"


def test_past_the_limit_a_429_says_which_limit_and_when_to_retry():
    c = client(RATE_LIMIT_CHAT="2/minute")
    assert [c.get("/slow-down").status_code for _ in range(2)] == [200, 200]
    refused = c.get("/slow-down")
    assert refused.status_code == 429
    assert refused.get_json() == {"error": "Rate limit exceeded: 2 per 1 minute"}
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Limit"] == "2"
    # Limits count per client and per route.
    other = c.get("/slow-down", environ_base={"REMOTE_ADDR": "192.0.2.77"})
    assert other.status_code == 200
    assert c.get("/hello").status_code == 200


def test_clients_behind_trusted_proxies_are_counted_by_their_forwarded_address():
    c = client(RATE_LIMIT_CHAT="1/minute", TRUSTED_PROXY_HOPS="1")
    first = {"X-Forwarded-For": "203.0.113.1"}
    assert c.get("/slow-down", headers=first).status_code == 200
    assert c.get("/slow-down", headers=first).status_code == 429
    assert c.get("/slow-down", headers={"X-Forwarded-For": "203.0.113.2"}).status_code == 200


@contextlib.contextmanager
def router_json_lines() -> Iterator[list[dict]]:
    """The router's log lines as JSON, formatted while each request is served (in its
    context); the list fills when the block ends."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(None))
    router_logger = logging.getLogger("chatbot.web.router")
    old_level = router_logger.level
    router_logger.addHandler(handler)
    router_logger.setLevel(logging.INFO)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        router_logger.removeHandler(handler)
        router_logger.setLevel(old_level)
        lines += [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_request_context_carries_the_request_id_and_trace():
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with router_json_lines() as lines:
        client().get(
            "/hello",
            headers={"X-Request-Id": "req-42", "traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
        )
    assert lines[-1]["request_id"] == "req-42"
    assert lines[-1]["logging.googleapis.com/trace"] == trace


@pytest.mark.parametrize(
    "end, latency_ms, line",
    [(10.25, 250.0, "GET /hello 200 250.0ms"), (10.0123456, 12.35, "GET /hello 200 12.3ms")],
)
def test_the_summary_line_reports_latency_in_milliseconds_rounded(
    caplog, monkeypatch, end, latency_ms, line
):
    """Hundredths of a millisecond in the JSON field, tenths in the message."""
    clock = iter([10.0, end])
    monkeypatch.setattr("chatbot.web.router.time.perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO):
        client().get("/hello")
    assert summary_lines(caplog)[0]["latency_ms"] == latency_ms
    assert caplog.records[-1].getMessage() == line


def test_without_the_token_nothing_is_routed_and_failures_share_one_limit():
    c = client(guarded=True, RATE_LIMIT_ADMIN="2/minute")
    assert c.get("/hello", headers={"X-Admin-Token": TOKEN}).status_code == 200
    assert c.get("/nowhere").status_code == 401  # not a 404: routes do not show
    assert c.put("/hello").status_code == 401
    refused = c.get("/hello", headers={"X-Admin-Token": TOKEN})  # right token, past the limit
    assert refused.status_code == 429 and "2 per 1 minute" in refused.get_json()["error"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert client(guarded=True).get("/hello", headers={"X-Admin-Token": TOKEN}).status_code == 200
    # Another client still gets in.
    other = c.get(
        "/hello", headers={"X-Admin-Token": TOKEN}, environ_base={"REMOTE_ADDR": "192.0.2.9"}
    )
    assert other.status_code == 200


def test_authorize_and_its_limit_go_together():
    with pytest.raises(ValueError, match="^authorize and failed_auth_rate go together$"):
        Router(Settings(), {}, index=dict, index_rate="rate_limit_info", authorize=authorize)


def test_cors_is_on_unless_turned_off():
    router = Router(Settings(), ROUTES, index=dict, index_rate="rate_limit_info")
    assert router.cors is True


def test_an_unknown_path_is_named_in_the_404_up_to_100_characters():
    long = "/" + "p" * 150
    error = client().get(long).get_json()["error"]
    assert error == f"No route {long[:100]}; see GET / for the API"


def test_a_405_names_the_method_and_the_allowed_ones():
    assert client().put("/hello").get_json()["error"] == "Method PUT not allowed; use GET, OPTIONS"


def test_request_ids_made_here_are_16_hex_characters():
    made = client().get("/hello").headers["X-Request-Id"]
    assert len(made) == 16 and int(made, 16) >= 0


def test_clients_are_hashed_to_12_characters():
    assert len(anonymize("192.0.2.1")) == 12 and anonymize("192.0.2.1") != anonymize("192.0.2.2")


def test_a_request_id_with_dashes_only_where_letters_are_is_kept():
    assert (
        client().get("/hello", headers={"X-Request-Id": "a-b-c"}).headers["X-Request-Id"] == "a-b-c"
    )
    assert client().get("/hello", headers={"X-Request-Id": "---"}).headers["X-Request-Id"] != "---"


def test_every_5xx_error_is_logged_with_its_reason_and_a_4xx_is_not(caplog):
    c = client()
    with caplog.at_level(logging.WARNING, logger="chatbot.web.router"):
        assert c.get("/plain-500").status_code == 500
        c.post("/refused")
    assert [r.getMessage() for r in caplog.records] == ["GET /plain-500 -> 500: store broke"]


def test_each_route_has_its_own_count_even_with_the_same_limit():
    c = client(RATE_LIMIT_CHAT="1/minute")
    assert c.get("/slow-down").status_code == 200 and c.get("/slow-down").status_code == 429
    assert c.get("/also-chat").status_code == 200


def test_the_index_is_limited_and_unlisted_routes_stay_out_of_it():
    response = client(RATE_LIMIT_INFO="7/minute").get("/")
    assert response.headers["X-RateLimit-Limit"] == "7"
    assert "/hidden" not in {row["path"] for row in response.get_json()["routes"]}


def test_ipv6_clients_share_their_network_limit():
    c = client(RATE_LIMIT_CHAT="1/minute")
    assert c.get("/slow-down", environ_base={"REMOTE_ADDR": "2001:db8::1"}).status_code == 200
    assert c.get("/slow-down", environ_base={"REMOTE_ADDR": "2001:db8::2"}).status_code == 429


def test_bodies_past_max_body_bytes_are_refused_before_routing():
    response = client(MAX_BODY_BYTES="1024").post("/refused", data=b"x" * 5000)
    assert response.status_code == 413


def test_a_streams_summary_line_is_logged_in_its_request_context():
    with router_json_lines() as lines:
        client().post("/stream", headers={"X-Request-Id": "stream-7"}).get_data()
    assert lines[-1]["request_id"] == "stream-7"
