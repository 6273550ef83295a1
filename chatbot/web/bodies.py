"""Request bodies: read the JSON safely, then validate it with its pydantic model.

Every way a body can be wrong ends in a ClientError whose message says exactly what, naming
the field: ``Field 'message' must be a string``, never a raw pydantic dump.
"""

from __future__ import annotations

import json
from typing import TypeVar

import flask
from pydantic import BaseModel, ValidationError

from chatbot.errors import ClientError, PayloadTooLarge, UnsupportedMediaType

__all__ = ["MAX_JSON_DEPTH", "parse_body", "read_json"]
M = TypeVar("M", bound=BaseModel)
MAX_JSON_DEPTH = 32
# What a field of the wrong type must be, by pydantic's error type.
_EXPECTED = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def _depth(value, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def read_json(request: flask.Request, max_bytes: int) -> object:
    """The request's JSON body, or a ClientError that says exactly what is wrong with it."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {mimetype or 'nothing'}"
        )
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    if not raw.strip():
        raise ClientError("Request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError("Request body is not valid UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise ClientError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise ClientError(
            f"Request body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None
    except ValueError:  # an integer longer than Python converts (sys.int_max_str_digits)
        raise ClientError("Request body is not valid JSON: a number has too many digits") from None
    if _depth(value, MAX_JSON_DEPTH):
        raise ClientError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def parse_body(request: flask.Request, model: type[M], max_bytes: int, **context: object) -> M:
    """The request's JSON body validated as ``model`` (``context`` carries limits from Settings)."""
    body = read_json(request, max_bytes)
    if not isinstance(body, dict):
        raise ClientError("Request body must be a JSON object")
    try:
        return model.model_validate(body, context=context)
    except ValidationError as exc:
        raise ClientError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One sentence for the first thing wrong; unknown fields are named all at once."""
    errors = exc.errors(include_url=False, include_input=False)
    unknown = sorted(_field(e["loc"]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return f"Unknown field(s): {', '.join(unknown)[:200]}"
    error = errors[0]
    name, kind = _field(error["loc"]), error["type"]
    if kind == "missing":
        return f"Field '{name}' is required"
    if kind in _EXPECTED:
        return f"Field '{name}' must be {_EXPECTED[kind]}"
    if kind == "field_rule":
        return f"Field '{name}' {error['msg']}"
    if kind == "string_too_long":
        return f"Field '{name}' must be at most {error['ctx']['max_length']} characters"
    if kind == "string_too_short":
        return f"Field '{name}' must not be empty"
    if kind == "string_pattern_mismatch":
        return f"Field '{name}' is not in the expected format"
    if kind == "literal_error":
        return f"Field '{name}' must be {error['ctx']['expected']}"
    return f"Field '{name}': {error['msg']}"


def _field(loc: tuple) -> str:
    """``("history", 0, "content")`` -> ``history[0].content``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
