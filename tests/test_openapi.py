"""The OpenAPI documents: valid 3.1, complete, true to the settings; Swagger UI served locally."""

from __future__ import annotations

import json
import re

import flask
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from chatbot.config import Settings
from chatbot.web.docs import DOCS_ASSETS
from chatbot.web.openapi import admin_document, chat_document
from tests.conftest import ADMIN_SOURCE
from tests.openapi_check import Contract, assert_matches_openapi, chat_contract

EXTERNAL_URL = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.IGNORECASE)


@pytest.mark.parametrize("build", [chat_document, admin_document])
def test_documents_are_valid_openapi_3_1(build):
    document = build(Settings())
    assert document["openapi"].startswith("3.1")
    errors = list(OpenAPIV31SpecValidator(document).iter_errors())
    assert not errors, [str(e)[:300] for e in errors[:3]]


def test_every_example_matches_its_schema():
    contract = chat_contract()
    checked = 0
    for path, item in contract.document["paths"].items():
        for method, operation in item.items():
            pointer = f"/paths/{path.replace('/', '~1')}/{method}"
            bodies = [("requestBody", operation.get("requestBody", {}))]
            bodies += [(f"responses/{k}", r) for k, r in operation["responses"].items()]
            for where, spec in bodies:
                spec, spec_pointer = contract.resolve(spec, f"{pointer}/{where}")
                for media, content in spec.get("content", {}).items():
                    examples = [content["example"]] if "example" in content else []
                    examples += [e["value"] for e in content.get("examples", {}).values()]
                    for example in examples:
                        schema_at = f"{spec_pointer}/content/{media.replace('/', '~1')}/schema"
                        contract.validate(example, schema_at)
                        checked += 1
    assert checked >= 8


def test_every_route_of_the_chat_function_is_documented(chat_client):
    routes = chat_client().application.function.router.routes
    contract = chat_contract()
    for path, methods in routes.items():
        template = contract.template_for(path)
        assert template is not None, f"{path} is not in the OpenAPI document"
        for method in methods:
            assert method.lower() in contract.document["paths"][template], f"{method} {path}"
    documented = {p for p in contract.document["paths"] if "{" not in p}
    assert documented <= set(routes), "the document lists a route nobody serves"


def test_the_served_document_follows_the_settings(chat_client):
    client = chat_client(MAX_MESSAGE_CHARS=321, RATE_LIMIT_CHAT="1/minute", MAX_BODY_BYTES=4096)
    document = client.get("/openapi.json").get_json()
    assert document == chat_document(client.application.function.settings)
    request_schema = document["components"]["schemas"]["ChatRequest"]
    assert request_schema["properties"]["message"]["maxLength"] == 321
    chat = document["paths"]["/chat"]["post"]
    assert "1 per 1 minute" in chat["description"] and "4096 bytes" in chat["description"]
    # The documented 429 is the one the visitor gets.
    documented = chat["responses"]["429"]["content"]["application/json"]["example"]
    client.post("/chat", json={"message": "What services do you offer?"})
    limited = client.post("/chat", json={"message": "What services do you offer?"})
    assert limited.status_code == 429 and limited.get_json() == documented


def test_docs_page_loads_only_local_assets(chat_client):
    client = chat_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert not EXTERNAL_URL.search(html), EXTERNAL_URL.search(html)
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    references = re.findall(r"""(?:src|href)="([^"]+)\"""", html)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} <= set(references)
    for reference in references:
        asset = client.get(reference)
        assert asset.status_code == 200 and len(asset.get_data()) > 100, reference
    initializer = client.get("/docs/swagger-initializer.js").get_data(as_text=True)
    assert '"/openapi.json"' in initializer and not EXTERNAL_URL.search(initializer)
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.mimetype == "text/javascript" and b"SwaggerUIBundle" in bundle.get_data()
    assert bundle.headers["Cache-Control"].startswith("public")


def test_only_the_listed_assets_are_served(chat_client):
    client = chat_client()
    routes = client.application.function.router.routes
    assert {f"/docs/{name}" for name in DOCS_ASSETS} <= set(routes)
    for path in ("/docs/index.html", "/docs/swagger-ui.js.map", "/docs/../openapi.json"):
        assert client.get(path).status_code == 404, path


def _response(status: int, body: object, headers: dict | None = None) -> flask.Response:
    return flask.Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


LIMIT_HEADERS = {
    "X-Request-Id": "abc123",
    "X-RateLimit-Limit": "20",
    "X-RateLimit-Remaining": "19",
    "X-RateLimit-Reset": "1767522615",
}
ANSWER = {"response": "Hi", "status": "success", "cached": False, "sources": [], "snapshot": "v1"}


@pytest.mark.parametrize(
    "response, why",
    [
        (_response(500, {"error": "Internal server error", "status": "error"}), "not list"),
        (_response(200, {**ANSWER, "extra": 1}, LIMIT_HEADERS), "Additional properties"),
        (_response(200, {**ANSWER, "cached": "no"}, LIMIT_HEADERS), "is not of type"),
        (_response(200, ANSWER, {"X-Request-Id": "abc123"}), "missing header X-RateLimit"),
        (_response(400, {"error": "bad"}, LIMIT_HEADERS), "'status' is a required property"),
    ],
)
def test_the_checker_rejects_what_the_document_does_not_promise(response, why):
    with pytest.raises(AssertionError, match=why):
        assert_matches_openapi(response, "/chat", "POST")


def test_the_checker_holds_unknown_paths_and_methods_to_404_and_405():
    contract = Contract(chat_document(Settings()))
    contract.check(
        _response(404, {"error": "No route", "status": "error"}, {"X-Request-Id": "a"}), "/x", "GET"
    )
    with pytest.raises(AssertionError, match="missing header Allow"):
        contract.check(
            _response(405, {"error": "no", "status": "error"}, {"X-Request-Id": "a"}),
            "/chat",
            "GET",
        )


def test_the_admin_function_answers_as_its_document_says(bucket, built_snapshot, monkeypatch):
    from functions_framework import create_app

    token = "admin-token-0123456789abcdef-5a7c9e1b"
    monkeypatch.setenv("SNAPSHOT_URI", bucket.uri)
    monkeypatch.setenv("ADMIN_TOKEN", token)
    client = create_app("admin", str(ADMIN_SOURCE)).test_client()
    contract = Contract(admin_document(Settings.from_env()))
    auth = {"X-Admin-Token": token}
    version = built_snapshot.manifest.version
    exchanges = [
        ("GET", "/", auth, None, 200),
        ("GET", "/openapi.json", auth, None, 200),
        ("GET", "/cache/stats", auth, None, 200),
        ("GET", "/snapshots", auth, None, 200),
        ("DELETE", "/cache", auth, None, 200),
        ("POST", "/snapshots/activate", auth, {"version": version}, 200),
        ("POST", "/snapshots/activate", auth, {"version": "nope-1"}, 404),
        ("POST", "/snapshots/activate", auth, {"version": "../etc"}, 400),
        ("GET", "/snapshots", {"X-Admin-Token": "wrong"}, None, 401),
        ("GET", "/nope", auth, None, 404),
        ("PUT", "/cache", auth, None, 405),
    ]
    for method, path, headers, body, status in exchanges:
        resp = client.open(path, method=method, headers=headers, json=body)
        assert resp.status_code == status, (method, path, resp.get_data()[:300])
        contract.check(resp, path, method)
    assert client.get("/openapi.json", headers=auth).get_json() == contract.document
    # Without the token, 404 and 405 are 401s (the document says so), and no CORS anywhere.
    responses = contract.document["components"]["responses"]
    for name in ("NotFound", "MethodNotAllowed", "Preflight"):
        assert "X-Admin-Token" in responses[name]["description"], name
    assert set(responses["Preflight"]["headers"]) == {"X-Request-Id", "Allow"}
    for path, method in (("/nope", "GET"), ("/cache", "PUT"), ("/cache", "OPTIONS")):
        resp = client.open(path, method=method)
        assert resp.status_code == 401 and resp.get_json()["status"] == "error"
        contract.check(resp, "/cache/stats", "GET")  # the shared Unauthorized answer
