"""Hold chat function responses to its OpenAPI document: status, headers, content type, body.

``assert_matches_openapi(response, path, method)`` checks one response. ``OpenApiClient`` is a
Flask test client that checks every response it returns; the ``chat_client`` fixture uses it,
so every response the suite receives from the chat function is validated. OpenAPI 3.1
schemas are JSON Schema 2020-12: bodies are validated with jsonschema's Draft 2020-12
validator, with ``$ref`` resolved inside the document.

Requests the document cannot list are held to its shared answers: a path it does not know to
``components/responses/NotFound``, a method a known path does not take to ``MethodNotAllowed``
(with ``Allow``), an undocumented OPTIONS to ``Preflight``, and HEAD to the GET operation
without its body.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from flask.testing import FlaskClient
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from chatbot.config import Settings
from chatbot.web.openapi import chat_document

DOC_URI = "urn:romega:chat-openapi"


class Contract:
    """One OpenAPI document, ready to check responses against."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self.registry = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document))
        self._templates = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path in document["paths"]
        ]

    # -- looking things up --------------------------------------------------------------------

    def resolve(self, node: dict, pointer: str) -> tuple[dict, str]:
        """Follow local ``$ref``s; returns the node and its JSON pointer in the document."""
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.document
            for part in pointer.strip("/").split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def template_for(self, path: str) -> str | None:
        """The document's path template that ``path`` falls under, if any."""
        if path in self.document["paths"]:
            return path
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return None

    def expected(self, path: str, method: str, status: int) -> tuple[dict, str, bool]:
        """(response object, its pointer, whether a body is expected) for this exchange."""
        path = path.split("?", 1)[0].rstrip("/") or "/"  # as chatbot.web.router.Router routes it
        method = method.lower()
        template = self.template_for(path)
        components = "/components/responses"
        if template is None:
            return self._shared(components, "NotFound", status, 404)
        item = self.document["paths"][template]
        body = method != "head"
        if method == "head" and "head" not in item:
            method = "get"
        if method not in item:
            if method == "options":
                return self._shared(components, "Preflight", status, 204)
            return self._shared(components, "MethodNotAllowed", status, 405)
        responses = item[method]["responses"]
        key = str(status) if str(status) in responses else "default"
        pointer = f"/paths/{_escape(template)}/{method}/responses/{key}"
        assert key in responses, (
            f"{method.upper()} {path} answered {status}, which the OpenAPI document does not "
            f"list for {method.upper()} {template} (it lists {', '.join(responses)})"
        )
        node, pointer = self.resolve(responses[key], pointer)
        return node, pointer, body

    def _shared(self, base: str, name: str, status: int, expected: int) -> tuple[dict, str, bool]:
        assert status == expected, f"expected {expected} ({name}), got {status}"
        node, pointer = self.resolve({"$ref": f"#{base}/{name}"}, "")
        return node, pointer, True

    # -- checking -----------------------------------------------------------------------------

    def validate(self, value: Any, pointer: str) -> None:
        """Validate ``value`` against the schema at ``pointer``; raise with every error."""
        validator = Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=self.registry)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            detail = "; ".join(
                f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in errors[:5]
            )
            raise AssertionError(f"body does not match {pointer}: {detail}")

    def check(self, response: Any, path: str, method: str) -> None:
        """Assert that one response is what the document promises."""
        where = f"{method.upper()} {path} -> {response.status_code}"
        spec, pointer, with_body = self.expected(path, method, response.status_code)
        for name, header in spec.get("headers", {}).items():
            header, header_pointer = self.resolve(header, f"{pointer}/headers/{_escape(name)}")
            value = response.headers.get(name)
            if value is None:
                assert not header.get("required"), f"{where}: missing header {name}"
                continue
            schema = header.get("schema", {})
            if schema.get("type") == "integer":
                assert re.fullmatch(r"-?\d+", value), f"{where}: {name}={value!r} not an integer"
                self.validate(int(value), f"{header_pointer}/schema")
            else:
                self.validate(value, f"{header_pointer}/schema")
        data = response.get_data()
        content = spec.get("content")
        if not content:
            assert not data, f"{where}: a body where the document promises none"
            return
        mimetype = response.mimetype
        assert mimetype in content, (
            f"{where}: Content-Type {mimetype} is not one of {list(content)}"
        )
        if with_body and mimetype == "text/event-stream":
            self._check_events(data, f"{pointer}/content/{_escape(mimetype)}", where)
            return
        if not with_body or mimetype != "application/json":
            return
        try:
            body = json.loads(data)
        except ValueError:
            raise AssertionError(f"{where}: body is not JSON: {data[:200]!r}") from None
        try:
            self.validate(body, f"{pointer}/content/{_escape(mimetype)}/schema")
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None

    def _check_events(self, data: bytes, pointer: str, where: str) -> None:
        """Server-Sent Events: each a documented event whose JSON data matches its schema
        (``contentSchema`` of its ``oneOf`` branch), in the promised order."""
        branches = self.resolve_pointer(f"{pointer}/schema/oneOf")
        schema_of = {
            branch["properties"]["event"]["const"]: f"{pointer}/schema/oneOf/{n}/properties/"
            "data/contentSchema"
            for n, branch in enumerate(branches)
        }
        names = []
        for event in parse_sse(data):
            assert event.event in schema_of, f"{where}: undocumented event {event.event}"
            self.validate(json.loads(event.data), schema_of[event.event])
            names.append(event.event)
        assert names and names[0] == "meta", f"{where}: the first event is not meta: {names}"
        assert names[-1] in ("done", "error"), f"{where}: the stream did not end: {names}"
        assert set(names[1:-1]) <= {"delta"}, f"{where}: events out of order: {names}"

    def resolve_pointer(self, pointer: str) -> dict:
        """The node at a JSON pointer of the document."""
        node = self.document
        for part in pointer.strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node


def parse_sse(data: bytes) -> list[ServerSentEvent]:
    """The events of a complete SSE body, decoded by httpx-sse's own decoder."""
    decoder = SSEDecoder()
    events = []
    for line in data.decode().splitlines():
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@functools.cache
def chat_contract() -> Contract:
    """The chat function's document (response schemas do not depend on the settings)."""
    return Contract(chat_document(Settings()))


def assert_matches_openapi(response: Any, path: str, method: str) -> None:
    """Fail unless ``response`` to ``method path`` is documented and matches its schema."""
    chat_contract().check(response, path, method)


class OpenApiClient(FlaskClient):
    """A Flask test client that holds every response to the chat function's OpenAPI document."""

    def open(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        response = super().open(*args, **kwargs)
        request = response.request
        assert_matches_openapi(response, request.path, request.method)
        return response
