"""Anthropic and Gemini request validation: precise 400s, and normalised round trips."""

from __future__ import annotations

from typing import Any

import pytest

from rawsse.chat import (
    ChatError,
    ChatRequest,
    Message,
    Tool,
    ToolCall,
    ToolChoice,
    parse_anthropic,
    parse_gemini,
)


def anthropic(**fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "model": "echo",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello"}],
    }
    value.update(fields)
    return value


def test_anthropic_full_body_round_trips() -> None:
    request = parse_anthropic(
        anthropic(
            system=[{"type": "text", "text": "Be brief."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
            stream=True,
            temperature=1,
            top_p=0.5,
            top_k=3,
            stop_sequences=["END"],
            metadata={"user_id": "u"},
            tools=[{"name": "w", "description": "weather", "input_schema": {"type": "object"}}],
            tool_choice={"type": "any"},
            thinking={"type": "enabled", "budget_tokens": 1024},
            rawsse={"answer": "reasoning"},
        )
    )
    assert request == ChatRequest(
        model="echo",
        messages=(
            Message("system", "Be brief."),
            Message("user", "weather?"),
            Message("assistant", "Checking.", tool_calls=(ToolCall("toolu_1", "w", '{"c":"P"}'),)),
            Message("tool", "sunny", tool_call_id="toolu_1"),
            Message("user", "thanks"),
        ),
        dialect="anthropic",
        stream=True,
        include_usage=True,
        max_tokens=64,
        temperature=1.0,
        top_p=0.5,
        stop=("END",),
        tools=(Tool("w", "weather", {"type": "object"}),),
        tool_choice=ToolChoice("required"),
        user="u",
        extra={"answer": "reasoning"},
    )
    assert request.last_user_text() == "thanks"


def test_anthropic_tool_choices() -> None:
    choice = parse_anthropic(anthropic(tool_choice={"type": "tool", "name": "w"})).tool_choice
    assert choice == ToolChoice("function", "w")
    assert parse_anthropic(anthropic(tool_choice={"type": "none"})).tool_choice == ToolChoice(
        "none"
    )
    assert parse_anthropic(anthropic(system="S")).messages[0] == Message("system", "S")


ANTHROPIC_CASES: list[tuple[Any, str | None, str]] = [
    ("x", None, "Invalid body: expected a JSON object."),
    ({"max_tokens": 1, "messages": []}, "model", "Missing required parameter: 'model'."),
    (anthropic(max_tokens=None), "max_tokens", "Missing required parameter: 'max_tokens'."),
    (anthropic(max_tokens=0), "max_tokens", "Expected a value >= 1, but got 0 instead."),
    (anthropic(messages=[]), "messages", "empty array"),
    (
        anthropic(messages=[{"role": "system", "content": "x"}]),
        "messages.0.role",
        "Invalid value for 'messages.0.role': 'system'. Supported values are: 'user' and 'assistant'.",
    ),
    (anthropic(messages=[{"role": "user"}]), "messages.0.content", "'messages.0.content'"),
    (
        anthropic(messages=[{"role": "user", "content": [{"type": "image"}]}]),
        "messages.0.content.0.type",
        "Invalid value for 'messages.0.content.0.type': 'image'.",
    ),
    (
        anthropic(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}],
                }
            ]
        ),
        "messages.0.content.0.type",
        "'tool_use' blocks are only allowed in assistant messages",
    ),
    (
        anthropic(
            messages=[
                {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}
            ]
        ),
        "messages.0.content.0.type",
        "'tool_result' blocks are only allowed in user messages",
    ),
    (
        anthropic(
            messages=[
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "n", "input": []}],
                }
            ]
        ),
        "messages.0.content.0.input",
        "expected an object, but got an array instead.",
    ),
    (anthropic(system=5), "system", "expected an array"),
    (anthropic(temperature=1.5), "temperature", "Expected a value <= 1, but got 1.5 instead."),
    (anthropic(top_p=-1), "top_p", "Expected a value >= 0"),
    (anthropic(top_k=-1), "top_k", "Expected a value >= 0"),
    (anthropic(stop_sequences="END"), "stop_sequences", "expected an array"),
    (anthropic(stop_sequences=[1]), "stop_sequences.0", "expected a string"),
    (anthropic(metadata={"user_id": 5}), "metadata.user_id", "expected a string"),
    (anthropic(tools=[{"name": "w"}]), "tools.0.input_schema", "'tools.0.input_schema'"),
    (
        anthropic(tools=[{"name": "w w", "input_schema": {}}]),
        "tools.0.name",
        "String should match pattern",
    ),
    (
        anthropic(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        "tools.0.type",
        "Supported values are: 'custom'.",
    ),
    (anthropic(tool_choice={"type": "tool"}), "tool_choice.name", "'tool_choice.name'"),
    (
        anthropic(tool_choice={"type": "some"}),
        "tool_choice.type",
        "'auto', 'any', 'tool' and 'none'",
    ),
    (
        anthropic(thinking={"type": "on"}),
        "thinking.type",
        "Supported values are: 'enabled' and 'disabled'.",
    ),
    (anthropic(stream=1), "stream", "expected a boolean"),
    (anthropic(rawsse="x"), "rawsse", "expected an object"),
]


@pytest.mark.parametrize(("value", "param", "message"), ANTHROPIC_CASES)
def test_anthropic_invalid_fields(value: Any, param: str | None, message: str) -> None:
    with pytest.raises(ChatError) as info:
        parse_anthropic(value)
    assert (info.value.status, info.value.param) == (400, param)
    assert message in info.value.message


def gemini(**fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    value.update(fields)
    return value


def test_gemini_full_body_round_trips() -> None:
    request = parse_gemini(
        "echo",
        gemini(
            systemInstruction={"parts": [{"text": "Be brief."}]},
            contents=[
                {"parts": [{"text": "weather?"}]},
                {
                    "role": "model",
                    "parts": [
                        {"text": "hm", "thought": True},
                        {"text": "Checking."},
                        {"functionCall": {"name": "w", "args": {"c": "P"}}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [{"functionResponse": {"name": "w", "response": {"t": 20}}}],
                },
                {"role": "user", "parts": [{"text": "thanks"}]},
            ],
            generationConfig={
                "maxOutputTokens": 50,
                "temperature": 1.5,
                "topP": 0.9,
                "topK": 40,
                "candidateCount": 2,
                "stopSequences": ["END"],
                "seed": 3,
                "presencePenalty": 0.5,
                "frequencyPenalty": -0.5,
                "responseMimeType": "text/plain",
            },
            tools=[
                {
                    "functionDeclarations": [
                        {"name": "w", "description": "weather", "parameters": {}}
                    ]
                },
                {"googleSearch": {}},
            ],
            toolConfig={"functionCallingConfig": {"mode": "ANY"}},
            rawsse={"seed": 1},
        ),
        stream=True,
    )
    assert request == ChatRequest(
        model="echo",
        messages=(
            Message("system", "Be brief."),
            Message("user", "weather?"),
            Message("assistant", "Checking.", tool_calls=(ToolCall("call_0", "w", '{"c":"P"}'),)),
            Message("tool", '{"t":20}', name="w", tool_call_id="w"),
            Message("user", "thanks"),
        ),
        dialect="gemini",
        stream=True,
        include_usage=True,
        max_tokens=50,
        n=2,
        temperature=1.5,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        stop=("END",),
        seed=3,
        tools=(Tool("w", "weather", {}),),
        tool_choice=ToolChoice("required"),
        extra={"seed": 1},
    )


def test_gemini_accepts_snake_case() -> None:
    request = parse_gemini(
        "m",
        gemini(
            generation_config={"max_output_tokens": 5},
            system_instruction={"parts": [{"text": "S"}]},
        ),
        stream=False,
    )
    assert (request.max_tokens, request.messages[0], request.stream) == (
        5,
        Message("system", "S"),
        False,
    )


GEMINI_CASES: list[tuple[Any, str | None, str]] = [
    ([], None, "Invalid body: expected a JSON object."),
    ({}, "contents", "Missing required parameter: 'contents'."),
    (gemini(contents=[]), "contents", "empty array"),
    (
        gemini(contents=[{"role": "assistant", "parts": []}]),
        "contents[0].role",
        "Supported values are: 'user' and 'model'.",
    ),
    (gemini(contents=[{"role": "user"}]), "contents[0].parts", "'contents[0].parts'"),
    (
        gemini(contents=[{"parts": [{"inlineData": {}}]}]),
        "contents[0].parts[0]",
        "a part needs one of text, functionCall or functionResponse",
    ),
    (gemini(contents=[{"parts": [{"text": 1}]}]), "contents[0].parts[0].text", "expected a string"),
    (
        gemini(contents=[{"parts": [{"functionCall": {"name": "f"}}]}]),
        "contents[0]",
        "functionCall parts are only allowed in model turns",
    ),
    (
        gemini(generationConfig={"temperature": 3}),
        "generationConfig.temperature",
        "Expected a value <= 2, but got 3 instead.",
    ),
    (
        gemini(generationConfig={"maxOutputTokens": 0}),
        "generationConfig.maxOutputTokens",
        "Expected a value >= 1",
    ),
    (
        gemini(generationConfig={"candidateCount": 9}),
        "generationConfig.candidateCount",
        "Expected a value <= 8",
    ),
    (gemini(generationConfig={"topP": 2}), "generationConfig.topP", "Expected a value <= 1"),
    (
        gemini(generationConfig={"stopSequences": ["a"] * 6}),
        "generationConfig.stopSequences",
        "maximum length 5",
    ),
    (
        gemini(generationConfig={"responseMimeType": "text/xml"}),
        "generationConfig.responseMimeType",
        "'text/plain' and 'application/json'",
    ),
    (gemini(generation_config={"top_k": 0}), "generation_config.top_k", "Expected a value >= 1"),
    (
        gemini(tools=[{"functionDeclarations": [{"name": "1f"}]}]),
        "tools[0].functionDeclarations[0].name",
        "Invalid function name",
    ),
    (
        gemini(toolConfig={"functionCallingConfig": {"mode": "SOME"}}),
        "toolConfig.functionCallingConfig.mode",
        "'AUTO', 'ANY', 'NONE' and 'VALIDATED'",
    ),
    (gemini(rawsse=1), "rawsse", "expected an object"),
]


@pytest.mark.parametrize(("value", "param", "message"), GEMINI_CASES)
def test_gemini_invalid_fields(value: Any, param: str | None, message: str) -> None:
    with pytest.raises(ChatError) as info:
        parse_gemini("echo", value, stream=True)
    assert (info.value.status, info.value.param) == (400, param)
    assert message in info.value.message


def test_gemini_model_from_the_url_must_be_named() -> None:
    with pytest.raises(ChatError) as info:
        parse_gemini("", gemini(), stream=True)
    assert info.value.param == "model"
