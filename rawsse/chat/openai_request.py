"""Parsing and validating an OpenAI Chat Completions request body into a ``ChatRequest``.

Contract: ``parse_openai(body)`` takes the decoded JSON body of ``POST /v1/chat/completions``
and returns a ``ChatRequest``, or raises ``ChatError`` 400 naming the first invalid field, in
OpenAI's wording. The rules (the ranges are OpenAI's; ``n`` is capped at ``MAX_CHOICES``):

1. ``model``: required, a non-empty string. ``messages``: required, a non-empty array.
2. Each message: an object with ``role`` in system, developer, user, assistant, tool; ``content``
   a string or an array of ``{"type": "text", "text": ...}`` parts (required except on an
   assistant message that has ``tool_calls``); ``name`` a string; a ``tool`` message needs
   ``tool_call_id``; an assistant's ``tool_calls`` are ``{id, type: function, function: {name,
   arguments}}``.
3. ``stream`` boolean; ``stream_options`` an object, only with ``stream: true``, whose
   ``include_usage`` is a boolean.
4. ``temperature`` 0 to 2; ``top_p`` 0 to 1; ``presence_penalty``, ``frequency_penalty`` -2 to 2;
   ``n`` 1 to ``MAX_CHOICES``; ``max_tokens`` and ``max_completion_tokens`` >= 1 (the latter wins
   when both are sent); ``seed`` an integer; ``user`` a string.
5. ``stop``: a string or an array of at most 4 strings.
6. ``tools``: an array of ``{"type": "function", "function": {"name", "description"?,
   "parameters"?}}`` (names ``[A-Za-z0-9_-]``, 1 to 64 characters); ``tool_choice``: none, auto,
   required or ``{"type": "function", "function": {"name"}}``, the latter two only with tools.
7. ``response_format``: ``{"type": text | json_object | json_schema}``; json_schema needs a
   ``json_schema`` object with a ``name``.
8. Perplexity's ``search_recency_filter``: month, week, day or hour.
9. ``rawsse``: an object (the demo models' load-test options; see docs/demo-models.md).
10. Other fields are accepted and ignored, so new SDK parameters do not break clients.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, cast

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
from rawsse.chat.request import (
    MAX_CHOICES,
    ChatRequest,
    Message,
    Role,
    Tool,
    ToolCall,
    ToolChoice,
)

__all__ = ["parse_openai"]

_ROLES = ("system", "developer", "user", "assistant", "tool")
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_RECENCY = ("month", "week", "day", "hour")


def _content_text(content: Any, param: str) -> str:
    """A message's content: a string, or text parts joined without separator."""
    if isinstance(content, str):
        return content
    parts = as_list(content, param)
    texts = []
    for j, part in enumerate(parts):
        where = f"{param}[{j}]"
        part = as_object(part, where)
        as_enum(require(part, "type", f"{where}.type"), f"{where}.type", ("text",))
        texts.append(as_str(require(part, "text", f"{where}.text"), f"{where}.text"))
    return "".join(texts)


def _tool_calls(value: Any, param: str) -> tuple[ToolCall, ...]:
    calls = []
    for j, call in enumerate(as_list(value, param)):
        where = f"{param}[{j}]"
        call = as_object(call, where)
        call_id = as_str(require(call, "id", f"{where}.id"), f"{where}.id")
        as_enum(require(call, "type", f"{where}.type"), f"{where}.type", ("function",))
        function = as_object(require(call, "function", f"{where}.function"), f"{where}.function")
        name = as_str(require(function, "name", f"{where}.function.name"), f"{where}.function.name")
        arguments = as_str(
            require(function, "arguments", f"{where}.function.arguments"),
            f"{where}.function.arguments",
        )
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)


def _message(value: Any, i: int) -> Message:
    where = f"messages[{i}]"
    value = as_object(value, where)
    role = cast(Role, as_enum(require(value, "role", f"{where}.role"), f"{where}.role", _ROLES))
    name = value.get("name")
    if name is not None:
        name = as_str(name, f"{where}.name")
    tool_calls: tuple[ToolCall, ...] = ()
    if role == "assistant" and value.get("tool_calls") is not None:
        tool_calls = _tool_calls(value["tool_calls"], f"{where}.tool_calls")
    content = value.get("content")
    if content is None and not tool_calls:
        require(value, "content", f"{where}.content")  # raises: content is required
    text = "" if content is None else _content_text(content, f"{where}.content")
    tool_call_id = None
    if role == "tool":
        tool_call_id = as_str(
            require(value, "tool_call_id", f"{where}.tool_call_id"), f"{where}.tool_call_id"
        )
    return Message(role, text, name=name, tool_call_id=tool_call_id, tool_calls=tool_calls)


def _tool(value: Any, i: int) -> Tool:
    where = f"tools[{i}]"
    value = as_object(value, where)
    as_enum(require(value, "type", f"{where}.type"), f"{where}.type", ("function",))
    function = as_object(require(value, "function", f"{where}.function"), f"{where}.function")
    name = as_str(require(function, "name", f"{where}.function.name"), f"{where}.function.name")
    if not _TOOL_NAME.match(name):
        raise ChatError.invalid(
            f"Invalid '{where}.function.name': string does not match pattern. Expected a "
            f"string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$', but got '{name}'.",
            param=f"{where}.function.name",
            code="invalid_value",
        )
    description = function.get("description")
    if description is not None:
        description = as_str(description, f"{where}.function.description")
    parameters = function.get("parameters")
    if parameters is not None:
        parameters = as_object(parameters, f"{where}.function.parameters")
    return Tool(name, description, parameters)


def _tool_choice(value: Any, param: str, read: Mapping[str, Any]) -> ToolChoice:
    if isinstance(value, str):
        mode = as_enum(value, "tool_choice", ("none", "auto", "required"))
        choice = ToolChoice(cast(Literal["none", "auto", "required"], mode))
    else:
        value = as_object(value, "tool_choice")
        as_enum(require(value, "type", "tool_choice.type"), "tool_choice.type", ("function",))
        function = as_object(
            require(value, "function", "tool_choice.function"), "tool_choice.function"
        )
        name = as_str(
            require(function, "name", "tool_choice.function.name"), "tool_choice.function.name"
        )
        choice = ToolChoice("function", name)
    if choice.mode in ("required", "function") and not read.get("tools"):
        raise ChatError.invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
            code="invalid_value",
        )
    return choice


def _response_format(value: Any, param: str, read: Mapping[str, Any]) -> dict[str, Any]:
    response_format = as_object(value, "response_format")
    kind = as_enum(
        require(response_format, "type", "response_format.type"),
        "response_format.type",
        ("text", "json_object", "json_schema"),
    )
    if kind == "json_schema":
        schema = as_object(
            require(response_format, "json_schema", "response_format.json_schema"),
            "response_format.json_schema",
        )
        as_str(
            require(schema, "name", "response_format.json_schema.name"),
            "response_format.json_schema.name",
            non_empty=True,
        )
    return response_format


def _stop(value: Any, param: str, read: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    items = as_list(value, param, max_length=4)
    return tuple(as_str(item, f"{param}[{i}]") for i, item in enumerate(items))


def _messages(value: Any, param: str, read: Mapping[str, Any]) -> tuple[Message, ...]:
    messages = as_list(value, param, non_empty=True)
    return tuple(_message(message, i) for i, message in enumerate(messages))


def _stream_options(value: Any, param: str, read: Mapping[str, Any]) -> bool:
    """``include_usage``: the only stream option, allowed only when streaming."""
    if not read.get("stream"):
        raise ChatError.invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param=param,
            code="invalid_value",
        )
    usage = as_object(value, param).get("include_usage")
    return False if usage is None else as_bool(usage, f"{param}.include_usage")


def _tools(value: Any, param: str, read: Mapping[str, Any]) -> tuple[Tool, ...]:
    return tuple(_tool(tool, i) for i, tool in enumerate(as_list(value, param, max_length=128)))


# The request's fields, in the order they are checked (the first invalid one is reported).
_FIELDS = (
    Field("model", "str", "model", required=True, non_empty=True),
    Field("messages", "custom", "messages", required=True, convert=_messages),
    Field("stream", "bool", "stream"),
    Field("stream_options", "custom", "include_usage", convert=_stream_options),
    Field("max_tokens", "int", "max_tokens", minimum=1),
    Field("max_completion_tokens", "int", "max_tokens", minimum=1),  # wins over max_tokens
    Field("temperature", "number", "temperature", minimum=0, maximum=2),
    Field("top_p", "number", "top_p", minimum=0, maximum=1),
    Field("presence_penalty", "number", "presence_penalty", minimum=-2, maximum=2),
    Field("frequency_penalty", "number", "frequency_penalty", minimum=-2, maximum=2),
    Field("n", "int", "n", minimum=1, maximum=MAX_CHOICES),
    Field("stop", "custom", "stop", convert=_stop),
    Field("seed", "int", "seed"),
    Field("user", "str", "user"),
    Field("tools", "custom", "tools", convert=_tools),
    Field("tool_choice", "custom", "tool_choice", convert=_tool_choice),
    Field("response_format", "custom", "response_format", convert=_response_format),
    Field("search_recency_filter", "enum", "search_recency_filter", choices=_RECENCY),
    Field("rawsse", "object", "extra"),
)


def parse_openai(body: Any) -> ChatRequest:
    """Validate an OpenAI Chat Completions body; raises ``ChatError`` 400 on the first error."""
    return ChatRequest(dialect="openai", **read_fields(as_body(body), _FIELDS))
