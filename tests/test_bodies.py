"""Request bodies: pydantic's errors become one sentence naming the field (pure, no app)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatbot.web.bodies import describe
from chatbot.web.models import ActivateRequest, ChatRequest


def error_for(model, body, **context) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body, context=context)
    return describe(caught.value)


@pytest.mark.parametrize(
    "body, expected",
    [
        ({}, "Field 'message' is required"),
        ({"message": 7}, "Field 'message' must be a string"),
        ({"message": ["hi"]}, "Field 'message' must be a string"),
        ({"message": "hi", "use_cache": 1}, "Field 'use_cache' must be a boolean"),
        ({"message": "hi", "use_cache": "true"}, "Field 'use_cache' must be a boolean"),
        ({"message": " \x00 "}, "Field 'message' must not be empty"),
        ({"message": "hi", "b": 1, "a": 2}, "Unknown field(s): a, b"),
        ({"message": 7, "zzz": 1}, "Unknown field(s): zzz"),  # unknown fields are named first
    ],
)
def test_chat_request_errors_name_the_field(body, expected):
    assert error_for(ChatRequest, body, max_message_chars=10) == expected


def test_the_length_limit_comes_from_the_context():
    assert error_for(ChatRequest, {"message": "x" * 11}, max_message_chars=10) == (
        "Field 'message' must be at most 10 characters"
    )
    assert ChatRequest.model_validate({"message": "x" * 11}).message == "x" * 11


def test_a_valid_message_is_cleaned_not_coerced():
    body = ChatRequest.model_validate({"message": "  rate\x07 for\ud800 seniors? "})
    assert (body.message, body.use_cache) == ("rate for seniors?", True)


@pytest.mark.parametrize("version", ["../LATEST", "a/b", ".hidden", "x" * 101, "é1"])
def test_activate_refuses_names_that_are_not_versions(version):
    message = error_for(ActivateRequest, {"version": version})
    assert message.startswith("Field 'version' must be a snapshot name")


def test_a_long_list_of_unknown_fields_is_cut_short():
    body = {f"field_{n:03}": n for n in range(100)}
    message = error_for(ActivateRequest, {"version": "v1", **body})
    assert message.startswith("Unknown field(s): field_000, field_001")
    assert len(message) <= len("Unknown field(s): ") + 200
