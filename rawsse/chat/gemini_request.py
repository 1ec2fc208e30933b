"""Parsing and validating a Gemini ``generateContent`` request body into a ``ChatRequest``.

Contract: ``parse_gemini(model, body, stream=...)`` takes the model named in the URL
(``/v1beta/models/{model}:streamGenerateContent`` streams, ``:generateContent`` does not) and
the decoded JSON body, and returns a ``ChatRequest`` (``include_usage`` always: Gemini always
reports ``usageMetadata``), or raises ``ChatError`` 400 naming the first invalid field. Keys are
the REST API's camelCase (what google-genai sends); the proto-JSON snake_case spellings are
accepted too. ``param`` paths use the key as sent. The rules:

1. ``contents``: required, a non-empty array of ``{"role": user | model, "parts": [...]}``
   (role defaults to user); a part is ``{"text"}`` (``thought: true`` parts are dropped),
   ``{"functionCall": {"name", "args"?}}`` (model turns) or ``{"functionResponse": {"name",
   "response"}}`` (user turns, becoming ``tool`` messages).
2. ``systemInstruction``: a content object whose text parts become a ``system`` message.
3. ``generationConfig``: ``maxOutputTokens`` >= 1; ``temperature`` 0 to 2; ``topP`` 0 to 1;
   ``topK`` >= 1; ``candidateCount`` 1 to ``MAX_CHOICES``; ``stopSequences`` at most 5 strings;
   ``seed`` an integer; ``presencePenalty`` / ``frequencyPenalty`` -2 to 2; ``responseMimeType``
   text/plain or application/json.
4. ``tools``: an array of objects; their ``functionDeclarations`` (``name``, ``description``?,
   ``parameters``?) become tools; other tool kinds (search grounding...) are ignored.
5. ``toolConfig.functionCallingConfig.mode``: AUTO, ANY, NONE or VALIDATED.
6. ``rawsse``: an object (the demo models' options); other fields are ignored.

What the mount must add: the key is the ``x-goog-api-key`` header or the ``key`` query parameter;
``alt=sse`` selects SSE framing (rawsse always answers a stream as SSE).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rawsse.chat.errors import ChatError
from rawsse.chat.fields import (
    Field,
    as_body,
    as_bool,
    as_enum,
    as_list,
    as_object,
    as_str,
    read_fields,
    require,
)
from rawsse.chat.request import MAX_CHOICES, ChatRequest, Message, Tool, ToolCall, ToolChoice
from rawsse.jsonio import dumps

__all__ = ["parse_gemini"]

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")


def _get(obj: Mapping[str, Any], key: str) -> tuple[Any, str]:
    """The value at camelCase ``key`` or its snake_case twin, and the key it was found at."""
    if key in obj:
        return obj[key], key
    snake = _SNAKE.sub("_", key).lower()
    return obj.get(snake), snake


def _parts(content: dict[str, Any], where: str, role: str) -> list[Message]:
    """One content object's parts as neutral messages (text, tool calls, tool results)."""
    parts = as_list(require(content, "parts", f"{where}.parts"), f"{where}.parts")
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        part = as_object(part, at)
        if (text := part.get("text")) is not None:
            thought = part.get("thought")
            if thought is not None and as_bool(thought, f"{at}.thought"):
                continue  # the model's own past thoughts are not input text
            texts.append(as_str(text, f"{at}.text"))
            continue
        call, call_key = _get(part, "functionCall")
        if call is not None:
            call = as_object(call, f"{at}.{call_key}")
            name = as_str(require(call, "name", f"{at}.{call_key}.name"), f"{at}.{call_key}.name")
            args = call.get("args")
            args = {} if args is None else as_object(args, f"{at}.{call_key}.args")
            call_id = call.get("id")
            call_id = (
                f"call_{len(calls)}" if call_id is None else as_str(call_id, f"{at}.{call_key}.id")
            )
            calls.append(ToolCall(call_id, name, dumps(args).decode()))
            continue
        response, response_key = _get(part, "functionResponse")
        if response is not None:
            response = as_object(response, f"{at}.{response_key}")
            name = as_str(
                require(response, "name", f"{at}.{response_key}.name"), f"{at}.{response_key}.name"
            )
            result = response.get("response")
            text = (
                ""
                if result is None
                else dumps(as_object(result, f"{at}.{response_key}.response")).decode()
            )
            results.append(Message("tool", text, name=name, tool_call_id=name))
            continue
        raise ChatError.invalid(
            f"Invalid value at '{at}': a part needs one of text, functionCall or functionResponse.",
            param=at,
            code="invalid_value",
        )
    if role == "model":
        return [Message("assistant", "".join(texts), tool_calls=tuple(calls))]
    if calls:
        raise ChatError.invalid(
            f"Invalid value at '{where}': functionCall parts are only allowed in model turns.",
            param=where,
            code="invalid_value",
        )
    if texts or not results:
        results.append(Message("user" if role == "user" else "system", "".join(texts)))
    return results


def _tools(value: Any, key: str, read: Mapping[str, Any]) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for i, tool in enumerate(as_list(value, key)):
        where = f"{key}[{i}]"
        tool = as_object(tool, where)
        declarations, decl_key = _get(tool, "functionDeclarations")
        if declarations is None:
            continue  # search grounding, code execution...: not function tools
        for j, declaration in enumerate(as_list(declarations, f"{where}.{decl_key}")):
            at = f"{where}.{decl_key}[{j}]"
            declaration = as_object(declaration, at)
            name = as_str(require(declaration, "name", f"{at}.name"), f"{at}.name")
            if not _TOOL_NAME.match(name):
                raise ChatError.invalid(
                    f"Invalid function name at '{at}.name': '{name}'. It must start with a letter "
                    "or an underscore and contain only a-z, A-Z, 0-9, underscores, dots or "
                    "dashes, at most 64 characters.",
                    param=f"{at}.name",
                    code="invalid_value",
                )
            description = declaration.get("description")
            if description is not None:
                description = as_str(description, f"{at}.description")
            parameters = declaration.get("parameters")
            if parameters is not None:
                parameters = as_object(parameters, f"{at}.parameters")
            tools.append(Tool(name, description, parameters))
    return tuple(tools)


def _tool_choice(value: Any, key: str, read: Mapping[str, Any]) -> ToolChoice | None:
    config = as_object(value, key)
    calling, calling_key = _get(config, "functionCallingConfig")
    if calling is None:
        return None
    where = f"{key}.{calling_key}"
    calling = as_object(calling, where)
    mode = calling.get("mode")
    if mode is None:
        return None
    mode = as_enum(mode, f"{where}.mode", ("AUTO", "ANY", "NONE", "VALIDATED"))
    if mode == "ANY":
        return ToolChoice("required")
    return ToolChoice("none" if mode == "NONE" else "auto")


def _system(value: Any, param: str, read: Mapping[str, Any]) -> list[Message]:
    return _parts(as_object(value, param), param, "system")


def _contents(value: Any, param: str, read: Mapping[str, Any]) -> tuple[Message, ...]:
    messages: list[Message] = list(read.get("system", ()))
    for i, content in enumerate(as_list(value, param, non_empty=True)):
        where = f"{param}[{i}]"
        content = as_object(content, where)
        role = content.get("role")
        role = "user" if role is None else as_enum(role, f"{where}.role", ("user", "model"))
        messages.extend(_parts(content, where, role))
    return tuple(messages)


def _stop_sequences(value: Any, param: str, read: Mapping[str, Any]) -> tuple[str, ...]:
    items = as_list(value, param, max_length=5)
    return tuple(as_str(item, f"{param}[{i}]") for i, item in enumerate(items))


_GENERATION_CONFIG = (
    Field("maxOutputTokens", "int", "max_tokens", minimum=1),
    Field("temperature", "number", "temperature", minimum=0, maximum=2),
    Field("topP", "number", "top_p", minimum=0, maximum=1),
    Field("topK", "int", minimum=1),
    Field("candidateCount", "int", "n", minimum=1, maximum=MAX_CHOICES),
    Field("stopSequences", "custom", "stop", convert=_stop_sequences),
    Field("seed", "int", "seed"),
    Field("presencePenalty", "number", "presence_penalty", minimum=-2, maximum=2),
    Field("frequencyPenalty", "number", "frequency_penalty", minimum=-2, maximum=2),
    Field("responseMimeType", "enum", choices=("text/plain", "application/json")),
)
# The request's fields (camelCase; ``_get`` finds the snake_case twins too), in the order they
# are checked (the first invalid one is reported).
_FIELDS = (
    # The array first, then the system instruction, then each content (which it precedes).
    Field("contents", "array", required=True, non_empty=True),
    Field("systemInstruction", "custom", "system", convert=_system),
    Field("contents", "custom", "messages", required=True, convert=_contents),
    Field("generationConfig", "section", fields=_GENERATION_CONFIG),
    Field("tools", "custom", "tools", convert=_tools),
    Field("toolConfig", "custom", "tool_choice", convert=_tool_choice),
    Field("rawsse", "object", "extra"),
)


def parse_gemini(model: str, body: Any, *, stream: bool) -> ChatRequest:
    """Validate a Gemini ``generateContent`` body for ``model``; raises ``ChatError`` 400."""
    model = as_str(model, "model", non_empty=True)
    values = read_fields(as_body(body), _FIELDS, lookup=_get)
    values.pop("system", None)  # leading system messages by now
    return ChatRequest(model=model, dialect="gemini", stream=stream, include_usage=True, **values)
