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
from typing import Any

from rawsse.chat.errors import ChatError
from rawsse.chat.fields import (
    as_bool,
    as_enum,
    as_int,
    as_list,
    as_number,
    as_object,
    as_str,
    require,
)
from rawsse.chat.request import MAX_CHOICES, ChatRequest, Message, Tool, ToolCall, ToolChoice
from rawsse.jsonio import dumps

__all__ = ["parse_gemini"]

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")


def _get(obj: dict[str, Any], key: str) -> tuple[Any, str]:
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


def _tools(value: Any, key: str) -> tuple[Tool, ...]:
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


def _tool_choice(value: Any, key: str) -> ToolChoice | None:
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


def parse_gemini(model: str, body: Any, *, stream: bool) -> ChatRequest:
    """Validate a Gemini ``generateContent`` body for ``model``; raises ``ChatError`` 400."""
    model = as_str(model, "model", non_empty=True)
    if not isinstance(body, dict):
        raise ChatError.invalid("Invalid body: expected a JSON object.", code="invalid_type")
    contents = as_list(require(body, "contents", "contents"), "contents", non_empty=True)
    messages: list[Message] = []
    system, system_key = _get(body, "systemInstruction")
    if system is not None:
        system = as_object(system, system_key)
        messages.extend(_parts(system, system_key, "system"))
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        content = as_object(content, where)
        role = content.get("role")
        role = "user" if role is None else as_enum(role, f"{where}.role", ("user", "model"))
        messages.extend(_parts(content, where, role))

    max_tokens = temperature = top_p = seed = None
    presence_penalty = frequency_penalty = None
    n = 1
    stop: tuple[str, ...] = ()
    config, config_key = _get(body, "generationConfig")
    if config is not None:
        config = as_object(config, config_key)

        def field(key: str) -> tuple[Any, str]:
            value, found = _get(config, key)
            return value, f"{config_key}.{found}"

        value, at = field("maxOutputTokens")
        if value is not None:
            max_tokens = as_int(value, at, minimum=1)
        value, at = field("temperature")
        if value is not None:
            temperature = as_number(value, at, minimum=0, maximum=2)
        value, at = field("topP")
        if value is not None:
            top_p = as_number(value, at, minimum=0, maximum=1)
        value, at = field("topK")
        if value is not None:
            as_int(value, at, minimum=1)
        value, at = field("candidateCount")
        if value is not None:
            n = as_int(value, at, minimum=1, maximum=MAX_CHOICES)
        value, at = field("stopSequences")
        if value is not None:
            items = as_list(value, at, max_length=5)
            stop = tuple(as_str(item, f"{at}[{i}]") for i, item in enumerate(items))
        value, at = field("seed")
        if value is not None:
            seed = as_int(value, at)
        value, at = field("presencePenalty")
        if value is not None:
            presence_penalty = as_number(value, at, minimum=-2, maximum=2)
        value, at = field("frequencyPenalty")
        if value is not None:
            frequency_penalty = as_number(value, at, minimum=-2, maximum=2)
        value, at = field("responseMimeType")
        if value is not None:
            as_enum(value, at, ("text/plain", "application/json"))

    tools: tuple[Tool, ...] = ()
    value, key = _get(body, "tools")
    if value is not None:
        tools = _tools(value, key)
    tool_choice = None
    value, key = _get(body, "toolConfig")
    if value is not None:
        tool_choice = _tool_choice(value, key)
    extra: dict[str, Any] = {}
    if (value := body.get("rawsse")) is not None:
        extra = as_object(value, "rawsse")

    return ChatRequest(
        model=model,
        messages=tuple(messages),
        dialect="gemini",
        stream=stream,
        include_usage=True,
        max_tokens=max_tokens,
        n=n,
        temperature=temperature,
        top_p=top_p,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        stop=stop,
        seed=seed,
        tools=tools,
        tool_choice=tool_choice,
        extra=extra,
    )
