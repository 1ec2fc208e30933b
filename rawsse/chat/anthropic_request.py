"""Parsing and validating an Anthropic Messages request body into a ``ChatRequest``.

Contract: ``parse_anthropic(body)`` takes the decoded JSON body of ``POST /v1/messages`` and
returns a ``ChatRequest`` (always ``n == 1`` and ``include_usage``: Anthropic streams always
carry usage), or raises ``ChatError`` 400 naming the first invalid field, with ``param`` paths in
Anthropic's dotted notation (``messages.0.content.1.type``). The rules, from the Messages API:

1. ``model``: a non-empty string; ``max_tokens``: an integer >= 1; ``messages``: a non-empty
   array. All three are required (``max_tokens`` too, unlike OpenAI).
2. Each message: ``role`` user or assistant; ``content`` a string or an array of blocks:
   ``text`` (``text``), ``tool_use`` (``id``, ``name``, ``input`` object; assistant only),
   ``tool_result`` (``tool_use_id``, ``content`` string or text blocks; user only),
   ``thinking`` / ``redacted_thinking`` (assistant only, dropped). A user turn's tool results
   become ``tool`` messages, its text a ``user`` message.
3. ``system``: a string or an array of text blocks, becoming a leading ``system`` message.
4. ``stream`` boolean; ``temperature`` 0 to 1; ``top_p`` 0 to 1; ``top_k`` an integer >= 0;
   ``stop_sequences`` an array of strings; ``metadata`` an object whose ``user_id`` is a string.
5. ``tools``: an array of ``{"name", "description"?, "input_schema"}`` (custom tools only);
   ``tool_choice``: ``{"type": auto | any | tool | none}``, ``tool`` with a ``name``.
6. ``thinking``: an object whose ``type`` is enabled or disabled.
7. ``rawsse``: an object (the demo models' options); other fields are ignored.

What the mount must add: the ``x-api-key`` header (or ``Authorization: Bearer``) is the key;
``anthropic-version`` is sent by every SDK (``2023-06-01``) and rawsse accepts any value.
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
from rawsse.chat.request import ChatRequest, Message, Tool, ToolCall, ToolChoice
from rawsse.jsonio import dumps

__all__ = ["parse_anthropic"]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_THINKING = ("enabled", "disabled")
_BLOCKS = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")
# The role a block kind may appear in; text may appear in both.
_ONLY_IN = {
    "tool_use": "assistant",
    "thinking": "assistant",
    "redacted_thinking": "assistant",
    "tool_result": "user",
}


def _text_blocks(value: Any, param: str) -> str:
    """A string, or an array of text blocks joined without separator."""
    if isinstance(value, str):
        return value
    texts = []
    for j, block in enumerate(as_list(value, param)):
        where = f"{param}.{j}"
        block = as_object(block, where)
        as_enum(require(block, "type", f"{where}.type"), f"{where}.type", ("text",))
        texts.append(as_str(require(block, "text", f"{where}.text"), f"{where}.text"))
    return "".join(texts)


def _turn(value: Any, i: int) -> list[Message]:
    """One Anthropic turn as one or more neutral messages."""
    where = f"messages.{i}"
    value = as_object(value, where)
    role = as_enum(require(value, "role", f"{where}.role"), f"{where}.role", ("user", "assistant"))
    content = require(value, "content", f"{where}.content")
    if isinstance(content, str):
        return [Message(cast(Literal["user", "assistant"], role), content)]
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, block in enumerate(as_list(content, f"{where}.content")):
        at = f"{where}.content.{j}"
        block = as_object(block, at)
        kind = as_enum(require(block, "type", f"{at}.type"), f"{at}.type", _BLOCKS)
        allowed = _ONLY_IN.get(kind, role)
        if role != allowed:
            raise ChatError.invalid(
                f"{at}.type: '{kind}' blocks are only allowed in {allowed} messages",
                param=f"{at}.type",
                code="invalid_value",
            )
        if kind == "text":
            texts.append(as_str(require(block, "text", f"{at}.text"), f"{at}.text"))
        elif kind == "tool_use":
            call_id = as_str(require(block, "id", f"{at}.id"), f"{at}.id", non_empty=True)
            name = as_str(require(block, "name", f"{at}.name"), f"{at}.name", non_empty=True)
            arguments = as_object(require(block, "input", f"{at}.input"), f"{at}.input")
            calls.append(ToolCall(call_id, name, dumps(arguments).decode()))
        elif kind == "tool_result":
            use_id = as_str(require(block, "tool_use_id", f"{at}.tool_use_id"), f"{at}.tool_use_id")
            result = block.get("content")
            text = "" if result is None else _text_blocks(result, f"{at}.content")
            if (is_error := block.get("is_error")) is not None:
                as_bool(is_error, f"{at}.is_error")
            results.append(Message("tool", text, tool_call_id=use_id))
        # thinking and redacted_thinking: the model's own past reasoning, not input text.
    if role == "assistant":
        return [Message("assistant", "".join(texts), tool_calls=tuple(calls))]
    if texts or not results:
        results.append(Message("user", "".join(texts)))
    return results


def _tool(value: Any, i: int) -> Tool:
    where = f"tools.{i}"
    value = as_object(value, where)
    if (kind := value.get("type")) is not None:
        as_enum(kind, f"{where}.type", ("custom",))
    name = as_str(require(value, "name", f"{where}.name"), f"{where}.name")
    if not _TOOL_NAME.match(name):
        raise ChatError.invalid(
            f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
            param=f"{where}.name",
            code="invalid_value",
        )
    description = value.get("description")
    if description is not None:
        description = as_str(description, f"{where}.description")
    schema = as_object(
        require(value, "input_schema", f"{where}.input_schema"), f"{where}.input_schema"
    )
    return Tool(name, description, schema)


def _tool_choice(value: Any, param: str, read: Mapping[str, Any]) -> ToolChoice:
    value = as_object(value, "tool_choice")
    kind = as_enum(
        require(value, "type", "tool_choice.type"),
        "tool_choice.type",
        ("auto", "any", "tool", "none"),
    )
    if kind == "tool":
        name = as_str(require(value, "name", "tool_choice.name"), "tool_choice.name")
        return ToolChoice("function", name)
    return ToolChoice("required" if kind == "any" else cast(Literal["auto", "none"], kind))


def _system(value: Any, param: str, read: Mapping[str, Any]) -> str:
    return _text_blocks(value, param)


def _turns(value: Any, param: str, read: Mapping[str, Any]) -> tuple[Message, ...]:
    messages = [Message("system", read["system"])] if "system" in read else []
    for i, turn in enumerate(as_list(value, param, non_empty=True)):
        messages.extend(_turn(turn, i))
    return tuple(messages)


def _stop_sequences(value: Any, param: str, read: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(as_str(item, f"{param}.{i}") for i, item in enumerate(as_list(value, param)))


def _tools(value: Any, param: str, read: Mapping[str, Any]) -> tuple[Tool, ...]:
    return tuple(_tool(tool, i) for i, tool in enumerate(as_list(value, param)))


# The request's fields, in the order they are checked (the first invalid one is reported).
_FIELDS = (
    Field("model", "str", "model", required=True, non_empty=True),
    Field("max_tokens", "int", "max_tokens", required=True, minimum=1),
    # The array first, then the system prompt, then each turn (which the system one precedes).
    Field("messages", "array", required=True, non_empty=True),
    Field("system", "custom", "system", convert=_system),
    Field("messages", "custom", "messages", required=True, convert=_turns),
    Field("stream", "bool", "stream"),
    Field("temperature", "number", "temperature", minimum=0, maximum=1),
    Field("top_p", "number", "top_p", minimum=0, maximum=1),
    Field("top_k", "int", minimum=0),
    Field("stop_sequences", "custom", "stop", convert=_stop_sequences),
    Field("metadata", "section", fields=(Field("user_id", "str", "user"),)),
    Field("tools", "custom", "tools", convert=_tools),
    Field("tool_choice", "custom", "tool_choice", convert=_tool_choice),
    Field("thinking", "section", fields=(Field("type", "enum", required=True, choices=_THINKING),)),
    Field("rawsse", "object", "extra"),
)


def parse_anthropic(body: Any) -> ChatRequest:
    """Validate an Anthropic Messages body; raises ``ChatError`` 400 on the first error."""
    values = read_fields(as_body(body), _FIELDS)
    values.pop("system", None)  # a leading system message by now
    return ChatRequest(dialect="anthropic", include_usage=True, **values)
