"""OpenAI request validation: each invalid field gets a precise 400; valid bodies round trip."""

from __future__ import annotations

from typing import Any

import pytest

from rawsse.chat import (
    MAX_CHOICES,
    ChatError,
    ChatRequest,
    Message,
    Tool,
    ToolCall,
    ToolChoice,
    load_json_body,
    parse_openai,
)

USER = {"role": "user", "content": "hello there"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def body(**fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"model": "echo", "messages": [USER]}
    value.update(fields)
    return value


def test_minimal_body_defaults() -> None:
    assert parse_openai(body()) == ChatRequest(
        model="echo", messages=(Message("user", "hello there"),)
    )


def test_full_body_round_trips() -> None:
    request = parse_openai(
        {
            "model": "lorem",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Really"}]},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}],
                    "name": "ann",
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x": 1}'},
                        }
                    ],
                },
                {"role": "tool", "content": "42", "tool_call_id": "call_1"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "n": 3,
            "temperature": 0.5,
            "top_p": 1,
            "presence_penalty": -2,
            "frequency_penalty": 2.0,
            "stop": ["a", "b"],
            "seed": 7,
            "user": "u1",
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            "search_recency_filter": "week",
            "rawsse": {"ttft_s": 0.1},
            "logprobs": False,  # unknown to rawsse: ignored
        }
    )
    assert request == ChatRequest(
        model="lorem",
        messages=(
            Message("system", "Be brief."),
            Message("developer", "Really"),
            Message("user", "a b", name="ann"),
            Message("assistant", "", tool_calls=(ToolCall("call_1", "f", '{"x": 1}'),)),
            Message("tool", "42", tool_call_id="call_1"),
        ),
        dialect="openai",
        stream=True,
        include_usage=True,
        max_tokens=20,
        n=3,
        temperature=0.5,
        top_p=1.0,
        presence_penalty=-2.0,
        frequency_penalty=2.0,
        stop=("a", "b"),
        seed=7,
        tools=(Tool("get_weather", None, {"type": "object"}),),
        tool_choice=ToolChoice("function", "get_weather"),
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        user="u1",
        search_recency_filter="week",
        extra={"ttft_s": 0.1},
    )
    assert request.last_user_text() == "a b"
    # Words: "Be brief." 2, "Really" 1, "a b" 2, '{"x": 1}' 2, "42" 1.
    assert request.prompt_tokens() == 8


def test_stop_string_and_tool_choice_modes() -> None:
    assert parse_openai(body(stop="END")).stop == ("END",)
    assert parse_openai(body(tool_choice="none")).tool_choice == ToolChoice("none")
    assert parse_openai(body(tools=[TOOL], tool_choice="required")).tool_choice == ToolChoice(
        "required"
    )
    assert (
        parse_openai(body(messages=[{"role": "assistant", "content": "x"}])).last_user_text() == ""
    )


CASES: list[tuple[Any, str | None, str | None, str]] = [
    # (body, param, code, message)
    ([], None, "invalid_type", "Invalid body: expected a JSON object."),
    (
        {"messages": [USER]},
        "model",
        "missing_required_parameter",
        "Missing required parameter: 'model'.",
    ),
    (body(model=""), "model", "empty_string", "Invalid 'model': empty string."),
    (
        body(model=3),
        "model",
        "invalid_type",
        "Invalid type for 'model': expected a string, but got an integer instead.",
    ),
    (
        {"model": "m"},
        "messages",
        "missing_required_parameter",
        "Missing required parameter: 'messages'.",
    ),
    (
        body(messages=[]),
        "messages",
        "empty_array",
        "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
    ),
    (
        body(messages={"role": "user"}),
        "messages",
        "invalid_type",
        "expected an array, but got an object instead.",
    ),
    (
        body(messages=["hi"]),
        "messages[0]",
        "invalid_type",
        "expected an object, but got a string instead.",
    ),
    (
        body(messages=[{"content": "x"}]),
        "messages[0].role",
        "missing_required_parameter",
        "Missing required parameter: 'messages[0].role'.",
    ),
    (
        body(messages=[{"role": "bot", "content": "x"}]),
        "messages[0].role",
        "invalid_value",
        "Invalid value for 'messages[0].role': 'bot'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.",
    ),
    (
        body(messages=[{"role": "user"}]),
        "messages[0].content",
        "missing_required_parameter",
        "Missing required parameter: 'messages[0].content'.",
    ),
    (
        body(messages=[{"role": "assistant", "content": None}]),
        "messages[0].content",
        "missing_required_parameter",
        "'messages[0].content'",
    ),
    (
        body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content",
        "invalid_type",
        "expected an array, but got an integer instead.",
    ),
    (
        body(
            messages=[USER, {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
        ),
        "messages[1].content[0].type",
        "invalid_value",
        "Invalid value for 'messages[1].content[0].type': 'image_url'. Supported values are: 'text'.",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages[0].content[0].text",
        "missing_required_parameter",
        "'messages[0].content[0].text'",
    ),
    (
        body(messages=[{"role": "user", "content": "x", "name": 1}]),
        "messages[0].name",
        "invalid_type",
        "expected a string",
    ),
    (
        body(messages=[{"role": "tool", "content": "x"}]),
        "messages[0].tool_call_id",
        "missing_required_parameter",
        "'messages[0].tool_call_id'",
    ),
    (
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
        "missing_required_parameter",
        "'messages[0].tool_calls[0].function.arguments'",
    ),
    (
        body(stream="yes"),
        "stream",
        "invalid_type",
        "Invalid type for 'stream': expected a boolean, but got a string instead.",
    ),
    (
        body(stream_options={"include_usage": True}),
        "stream_options",
        "invalid_value",
        "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
    ),
    (
        body(stream=True, stream_options={"include_usage": 1}),
        "stream_options.include_usage",
        "invalid_type",
        "expected a boolean, but got an integer instead.",
    ),
    (
        body(temperature=2.5),
        "temperature",
        "decimal_above_max_value",
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 instead.",
    ),
    (
        body(temperature=-0.1),
        "temperature",
        "decimal_below_min_value",
        "Expected a value >= 0, but got -0.1 instead.",
    ),
    (
        body(temperature="hot"),
        "temperature",
        "invalid_type",
        "Invalid type for 'temperature': expected a decimal, but got a string instead.",
    ),
    (
        body(temperature=True),
        "temperature",
        "invalid_type",
        "expected a decimal, but got a boolean instead.",
    ),
    (
        body(top_p=1.5),
        "top_p",
        "decimal_above_max_value",
        "Expected a value <= 1, but got 1.5 instead.",
    ),
    (
        body(presence_penalty=-3),
        "presence_penalty",
        "decimal_below_min_value",
        "Expected a value >= -2, but got -3 instead.",
    ),
    (
        body(frequency_penalty=2.01),
        "frequency_penalty",
        "decimal_above_max_value",
        "Expected a value <= 2, but got 2.01 instead.",
    ),
    (
        body(n=0),
        "n",
        "integer_below_min_value",
        "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
    ),
    (
        body(n=MAX_CHOICES + 1),
        "n",
        "integer_above_max_value",
        f"Expected a value <= {MAX_CHOICES}, but got {MAX_CHOICES + 1} instead.",
    ),
    (
        body(n=1.5),
        "n",
        "invalid_type",
        "Invalid type for 'n': expected an integer, but got a decimal instead.",
    ),
    (
        body(max_tokens=0),
        "max_tokens",
        "integer_below_min_value",
        "Invalid 'max_tokens': integer below minimum value.",
    ),
    (
        body(max_completion_tokens=-1),
        "max_completion_tokens",
        "integer_below_min_value",
        "but got -1 instead.",
    ),
    (
        body(stop=["a", "b", "c", "d", "e"]),
        "stop",
        "array_above_max_length",
        "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length 5 instead.",
    ),
    (
        body(stop=["a", 1]),
        "stop[1]",
        "invalid_type",
        "Invalid type for 'stop[1]': expected a string",
    ),
    (body(stop=3), "stop", "invalid_type", "expected an array"),
    (body(seed="1"), "seed", "invalid_type", "expected an integer"),
    (body(user=1), "user", "invalid_type", "expected a string"),
    (
        body(search_recency_filter="year"),
        "search_recency_filter",
        "invalid_value",
        "Supported values are: 'month', 'week', 'day' and 'hour'.",
    ),
    (body(tools={}), "tools", "invalid_type", "expected an array"),
    (
        body(tools=[{"type": "retrieval"}]),
        "tools[0].type",
        "invalid_value",
        "Supported values are: 'function'.",
    ),
    (
        body(tools=[{"type": "function"}]),
        "tools[0].function",
        "missing_required_parameter",
        "'tools[0].function'",
    ),
    (
        body(tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name",
        "missing_required_parameter",
        "'tools[0].function.name'",
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "a b"}}]),
        "tools[0].function.name",
        "invalid_value",
        "does not match pattern",
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools[0].function.parameters",
        "invalid_type",
        "expected an object",
    ),
    (
        body(tool_choice="any"),
        "tool_choice",
        "invalid_value",
        "Supported values are: 'none', 'auto' and 'required'.",
    ),
    (
        body(tool_choice="required"),
        "tool_choice",
        "invalid_value",
        "'tool_choice' is only allowed when 'tools' are specified.",
    ),
    (
        body(tools=[TOOL], tool_choice={"type": "function", "function": {}}),
        "tool_choice.function.name",
        "missing_required_parameter",
        "'tool_choice.function.name'",
    ),
    (
        body(response_format={"type": "xml"}),
        "response_format.type",
        "invalid_value",
        "Supported values are: 'text', 'json_object' and 'json_schema'.",
    ),
    (
        body(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing_required_parameter",
        "'response_format.json_schema'",
    ),
    (
        body(response_format={"type": "json_schema", "json_schema": {"name": ""}}),
        "response_format.json_schema.name",
        "empty_string",
        "empty string",
    ),
    (
        body(rawsse=[1]),
        "rawsse",
        "invalid_type",
        "Invalid type for 'rawsse': expected an object, but got an array instead.",
    ),
]


@pytest.mark.parametrize(("value", "param", "code", "message"), CASES)
def test_invalid_fields(value: Any, param: str | None, code: str | None, message: str) -> None:
    with pytest.raises(ChatError) as info:
        parse_openai(value)
    error = info.value
    assert (error.status, error.type, error.param, error.code) == (
        400,
        "invalid_request_error",
        param,
        code,
    )
    assert message in error.message


@pytest.mark.parametrize(
    ("literal", "code", "message"),
    [
        # Beyond 64 bits the JSON reader hands the integer over as a float: still an integer.
        (
            "1180591620717411303424",
            "integer_above_max_value",
            "Invalid 'max_tokens': integer above maximum value. Expected a value <= "
            "9223372036854775807, but got 1180591620717411303424 instead.",
        ),
        (
            "18446744073709551615",
            "integer_above_max_value",
            "Expected a value <= 9223372036854775807, but got 18446744073709551615 instead.",
        ),
        (
            "-1180591620717411303424",
            "integer_below_min_value",
            "Expected a value >= 1, but got -1180591620717411303424 instead.",
        ),
        ("1.5e30", "integer_above_max_value", "Invalid 'max_tokens': integer above maximum value."),
        ("2.5", "invalid_type", "expected an integer, but got a decimal instead."),
    ],
)
def test_integers_beyond_64_bits_are_too_large_not_decimals(
    literal: str, code: str, message: str
) -> None:
    raw = b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": %b}'
    with pytest.raises(ChatError) as info:
        parse_openai(load_json_body(raw % literal.encode()))
    assert (info.value.param, info.value.code) == ("max_tokens", code)
    assert message in info.value.message


def test_seed_is_a_64_bit_integer() -> None:
    assert parse_openai(body(seed=2**63 - 1)).seed == 2**63 - 1
    assert parse_openai(body(seed=-(2**63))).seed == -(2**63)
    with pytest.raises(ChatError, match="integer above maximum value"):
        parse_openai(body(seed=2**63))


def test_load_json_body() -> None:
    assert load_json_body(b'{"a": 1}') == {"a": 1}
    with pytest.raises(ChatError) as info:
        load_json_body(b"{not json")
    assert (info.value.status, info.value.code) == (400, "invalid_json")
    assert isinstance(info.value.__cause__, ValueError)
