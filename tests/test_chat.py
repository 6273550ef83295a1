"""The chat function over the real functions-framework app: answers, health, and bad input."""

from __future__ import annotations

import json

import pytest


def ask(client, message, **extra):
    return client.post("/chat", json={"message": message, **extra})


def test_answers_from_the_knowledge_base_with_sources(chat_client):
    client = chat_client()
    resp = ask(client, "What is your day rate for a senior consultant?")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "success" and body["cached"] is False
    assert "1,150" in body["response"]
    assert body["sources"][0]["source"] == "pricing.md"
    assert set(body["sources"][0]) == {"title", "source", "score", "url"}
    assert body["snapshot"]


def test_a_source_links_to_its_own_page_else_to_source_base_url_plus_its_path(chat_client):
    question = "When was Romega founded and by whom?"
    # about.html names its page in a canonical link; the press release names none.
    plain = {s["source"]: s["url"] for s in ask(chat_client(), question).get_json()["sources"]}
    assert plain["about.html"] == "https://www.romega-solutions.com/about"
    assert plain["press-release-genai-pilot.txt"] is None
    rates = ask(chat_client(), "What is your day rate for a senior consultant?").get_json()
    assert rates["sources"][0]["url"] == "https://www.romega-solutions.com/pricing"  # front matter

    based = chat_client(SOURCE_BASE_URL="https://www.romega-solutions.com/kb")
    sources = {s["source"]: s["url"] for s in ask(based, question).get_json()["sources"]}
    assert sources["about.html"] == "https://www.romega-solutions.com/about"
    assert sources["press-release-genai-pilot.txt"] == (
        "https://www.romega-solutions.com/kb/press-release-genai-pilot.txt"
    )


def test_health_shows_the_snapshot_and_generator(chat_client, built_snapshot):
    client = chat_client()
    resp = client.get("/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "healthy" and body["generator"] == "extractive"
    assert body["snapshot"]["version"] == built_snapshot.manifest.version
    assert body["snapshot"]["chunks"] == built_snapshot.manifest.chunks
    assert body["snapshot"]["documents"] >= 10
    assert body["cache_size"] == 0 and body["api_version"]
    # Public: what is served, not where from (no uri, epoch, refusals or timings).
    assert set(body["snapshot"]) == {"version", "documents", "chunks"}


def test_unrelated_questions_get_the_contact_answer(chat_client):
    body = ask(chat_client(), "What is the boiling point of tungsten in kelvin?").get_json()
    assert "info@romega-solutions.com" in body["response"] and body["sources"] == []


def test_a_restart_restores_the_snapshot_and_embeds_only_queries(chat_client):
    restores = []
    for _ in range(2):  # two cold starts of the same function
        client = chat_client()
        assert ask(client, "Where is your headquarters?").status_code == 200
        service = client.application.function.service
        assert service.embedder.calls == 1  # the question, never a document
        restores.append(service.snapshots.live.timings)
    assert "download" in restores[0]  # first start: from the bucket
    assert restores[1] == {"reused": 1.0}  # restart: the extracted copy is reused


def test_info_lists_routes_and_limits(chat_client):
    body = chat_client().get("/").get_json()
    routes = {(r["method"], r["path"]): r["rate_limit"] for r in body["routes"]}
    assert routes[("POST", "/chat")] == "20/minute"
    assert routes[("GET", "/health")] == "unlimited"
    assert body["docs"] == "/docs"


BAD_BODIES = [
    ("not json", "application/json", 400, "not valid JSON"),
    ("[1, 2]", "application/json", 400, "JSON object"),
    ("{}", "application/json", 400, "'message' is required"),
    ('{"message": 42}', "application/json", 400, "must be a string"),
    ('{"message": null}', "application/json", 400, "must be a string"),
    ('{"message": "   "}', "application/json", 400, "must not be empty"),
    ('{"message": "\\u0000\\u0007"}', "application/json", 400, "must not be empty"),
    ('{"message": "hi", "use_cache": "no"}', "application/json", 400, "boolean"),
    ('{"message": "hi", "extra": 1}', "application/json", 400, "Unknown field"),
    ('{"message": "hi"}', "text/plain", 415, "application/json"),
    ("", "application/json", 400, "empty"),
    (b'{"message": "\xff\xfe"}', "application/json", 400, "UTF-8"),
    ("[" * 5000 + "]" * 5000, "application/json", 400, "nests deeper"),
    ('{"a":' * 40 + "1" + "}" * 40, "application/json", 400, "nests deeper"),
]


@pytest.mark.parametrize("data, content_type, status, words", BAD_BODIES)
def test_bad_bodies_get_a_clear_json_error(chat_client, data, content_type, status, words):
    resp = chat_client().post("/chat", data=data, content_type=content_type)
    assert resp.status_code == status
    assert words in resp.get_json()["error"]
    assert "Traceback" not in resp.get_data(as_text=True)


def test_over_long_message_is_rejected(chat_client):
    resp = ask(chat_client(MAX_MESSAGE_CHARS=50), "x" * 51)
    assert resp.status_code == 400 and "at most 50 characters" in resp.get_json()["error"]


def test_oversized_body_is_413(chat_client):
    client = chat_client()
    resp = client.post(
        "/chat", data=json.dumps({"message": "a" * 10_000_000}), content_type="application/json"
    )
    assert resp.status_code == 413 and "larger than" in resp.get_json()["error"]


def test_unknown_route_is_404_json(chat_client):
    resp = chat_client().get("/nope/../../etc/passwd")
    assert resp.status_code == 404 and resp.get_json()["status"] == "error"


def test_wrong_method_is_405_with_allow(chat_client):
    resp = chat_client().get("/chat")
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert "not allowed" in resp.get_json()["error"]


def test_cors_follows_allowed_origins(chat_client):
    client = chat_client(ALLOWED_ORIGINS="https://romega.example")
    ok = client.options("/chat", headers={"Origin": "https://romega.example"})
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "https://romega.example"
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    other = client.get("/", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_control_characters_are_stripped_from_questions(chat_client):
    resp = ask(chat_client(), "senior\x00 consultant\x1b day rate?")
    assert resp.status_code == 200 and "1,150" in resp.get_json()["response"]


def test_a_bad_setting_stops_start_up_naming_the_variable(monkeypatch):
    """main.py reads the environment once, at start-up, through the real functions-framework."""
    from functions_framework import create_app

    from tests.conftest import CHAT_SOURCE

    monkeypatch.setenv("CACHE_TTL", "soon")
    with pytest.raises(Exception, match="CACHE_TTL"):
        create_app("chat", str(CHAT_SOURCE))


def test_main_py_serves_the_app_built_from_the_environment(monkeypatch, bucket):
    """The entry point as deployed: functions-framework loads main.py, which reads Settings."""
    from functions_framework import create_app

    from tests.conftest import CHAT_SOURCE

    monkeypatch.setenv("SNAPSHOT_URI", bucket.uri)
    monkeypatch.setenv("RATE_LIMIT_INFO", "7/minute")
    client = create_app("chat", str(CHAT_SOURCE)).test_client()
    listing = client.get("/").get_json()["routes"]
    routes = {(r["method"], r["path"]): r["rate_limit"] for r in listing}
    assert routes[("GET", "/")] == "7/minute"
    resp = client.post("/chat", json={"message": "Where is your headquarters?"})
    assert resp.status_code == 200 and resp.get_json()["sources"]
    robots = client.get("/robots.txt")  # the framework's own 404, answered by our router
    assert robots.status_code == 404 and robots.get_json()["status"] == "error"
    assert robots.headers["X-Request-Id"]
