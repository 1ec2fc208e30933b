"""The chat layer's small values: deltas, ChatError, API keys, and the package's exports."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

import rawsse.chat
from rawsse.app import App
from rawsse.chat import (
    ChatError,
    Citations,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    as_chat_error,
    authenticate,
    check_api_key,
    mount_chat,
    openai_models_body,
    presented_key,
)
from rawsse.chat.auth import checked_keys, key_problem


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: TextDelta(1), "text"),  # type: ignore[arg-type]
        (lambda: TextDelta("x", -1), "choice"),
        (lambda: TextDelta("x", True), "choice"),  # type: ignore[arg-type]
        (lambda: ReasoningDelta(None), "text"),  # type: ignore[arg-type]
        (lambda: ToolCallDelta(-1), "index"),
        (lambda: ToolCallDelta(0, name=""), "name"),
        (lambda: ToolCallDelta(0, id=5), "id"),  # type: ignore[arg-type]
        (lambda: ToolCallDelta(0, arguments=None), "arguments"),  # type: ignore[arg-type]
        (lambda: Finish("done"), "reason"),  # type: ignore[arg-type]
        (lambda: Usage(-1, 0), "prompt_tokens"),
        (lambda: Usage(0, 1.5), "completion_tokens"),  # type: ignore[arg-type]
        (lambda: Citations([1]), "urls"),  # type: ignore[list-item]
    ],
)
def test_deltas_validate_on_construction(make: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_deltas_are_frozen_values() -> None:
    assert Citations(["a", "b"]).urls == ("a", "b")
    assert Citations(["a"]) == Citations(("a",))
    with pytest.raises(AttributeError):
        TextDelta("x").text = "y"  # type: ignore[misc]


def test_chat_error_fields_and_defaults() -> None:
    error = ChatError(400, "bad", param="n", code="invalid_value")
    assert (error.status, error.message, error.type, error.param, error.code) == (
        400,
        "bad",
        "invalid_request_error",
        "n",
        "invalid_value",
    )
    assert str(error) == "400 bad"
    assert ChatError(503, "x").type == "server_error"
    assert ChatError(400, "x", type="custom").type == "custom"
    assert ChatError.too_large(1024).status == 413
    assert "1024" in ChatError.too_large(1024).message
    assert as_chat_error(error) is error
    hidden = as_chat_error(RuntimeError("secret internals"))
    assert (hidden.status, hidden.code) == (500, "server_error")
    assert "secret" not in hidden.message


def test_api_keys_compare_every_key() -> None:
    assert check_api_key([], None)  # no keys configured: auth is off
    assert check_api_key(["a", "b"], "b")
    assert not check_api_key(["a", "b"], "c")
    assert not check_api_key(["a"], None)
    assert not check_api_key(["abc"], "ab")
    authenticate(["k"], "k")
    with pytest.raises(ChatError) as info:
        authenticate(["k"], None)
    assert (info.value.status, info.value.code) == (401, "missing_api_key")
    with pytest.raises(ChatError) as info:
        authenticate(["k"], "x")
    assert (info.value.status, info.value.code) == (401, "invalid_api_key")


def test_configured_keys_are_keys_a_client_can_present() -> None:
    assert checked_keys(["sk-1", "with inner space"]) == ("sk-1", "with inner space")
    assert checked_keys(()) == ()
    # A lone string is a collection of one-character keys: "Bearer s" would get in.
    with pytest.raises(TypeError, match=r"api_keys=\[key\]"):
        checked_keys("sk-local")
    for bad, reason in [
        ("", "cannot be empty"),
        (" sk", "start or end with a space"),
        ("sk\n", "printable ASCII"),
        ("cl\u00e9", "printable ASCII"),
        (5, "is a string"),
    ]:
        assert reason in (key_problem(bad) or ""), bad
        with pytest.raises(ValueError, match=reason):
            checked_keys(["ok", bad])  # type: ignore[list-item]


def test_mount_chat_refuses_a_string_of_keys() -> None:
    with pytest.raises(TypeError):
        mount_chat(App(), {}, api_keys="sk-local")
    with pytest.raises(ValueError, match="cannot be empty"):
        mount_chat(App(), {}, api_keys=[""])


def test_presented_key_sources() -> None:
    assert presented_key({"authorization": "Bearer  sk-1 "}) == "sk-1"
    assert presented_key({"authorization": "bearer sk-2"}) == "sk-2"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({"authorization": "Bearer "}) is None
    headers = {"x-api-key": "h", "authorization": "Bearer b"}
    assert presented_key(headers, header="x-api-key") == "h"
    assert presented_key({}, {"key": "q"}, query_param="key") == "q"
    assert presented_key({}, {"key": "q"}) is None


def test_models_body() -> None:
    assert openai_models_body(["echo"], created=5) == {
        "object": "list",
        "data": [{"id": "echo", "object": "model", "created": 5, "owned_by": "rawsse"}],
    }


def test_every_public_name_is_exported_once_and_documented() -> None:
    names = rawsse.chat.__all__
    assert len(names) == len(set(names))
    for name in names:
        value = getattr(rawsse.chat, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if not attr.startswith("_") and inspect.isfunction(member):
                        assert inspect.getdoc(member), f"{name}.{attr}"
    for module_name in (
        "anthropic_dialect",
        "auth",
        "chatgpt_web_dialect",
        "deltas",
        "dialect",
        "envelope_dialect",
        "errors",
        "fields",
        "gemini_dialect",
        "grammar",
        "demo",
        "openai_dialect",
        "anthropic_request",
        "gemini_request",
        "openai_request",
        "request",
        "transcript",
    ):
        module = importlib.import_module(f"rawsse.chat.{module_name}")
        assert "Contract" in (module.__doc__ or ""), module_name
        for name in module.__all__:
            assert hasattr(module, name), f"{module_name}.{name}"
