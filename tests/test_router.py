"""The HTTP edge on its own (chatbot/web/router.py): error mapping, CORS, HEAD, request ids.

A Router over a few toy handlers, mounted as functions-framework mounts a function, so each
test sees exactly what the edge adds and nothing the chat service does.
"""

from __future__ import annotations

import json
import logging

import flask
import pytest

from chatbot.config import Settings
from chatbot.errors import ClientError, GenerationUnavailable
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


def client(cors: bool = True, **env: str):
    router = Router(
        Settings.from_env(env),
        ROUTES,
        index=lambda rows: {"routes": rows},
        index_rate="rate_limit_info",
        cors=cors,
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
    assert "Content-Type" in response.headers["Access-Control-Allow-Headers"]
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
