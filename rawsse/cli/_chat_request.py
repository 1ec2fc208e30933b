"""The chat request ``rawsse bench`` and ``rawsse trace --chat`` send, in the format of its path.

Contract: ``request_format(path)`` names the request format a chat path of the demo app takes:
``openai`` (``/chat/completions``, and the ChatGPT-web and envelope routes, which take OpenAI's
requests), ``anthropic`` (``/messages``), ``gemini`` (``:streamGenerateContent`` and
``:generateContent``, the model in the path), or None for any other path.
``chat_request(path, model, text, max_tokens)`` is the JSON body of a streaming request with
``text`` as the one user message, in that format; None for a path that takes none. Send it with
``Content-Type: application/json``, and to Anthropic with ``anthropic-version:
ANTHROPIC_VERSION``.
"""

from __future__ import annotations

from typing import Any

from rawsse.jsonio import dumps

__all__ = ["ANTHROPIC_VERSION", "chat_request", "request_format"]

# Anthropic's Messages API requires this header; its value is the API version it speaks.
ANTHROPIC_VERSION = "2023-06-01"

_OPENAI_PATHS = ("/chat/completions", "/envelope/completions", "/backend-api/conversation")
_GEMINI_PATHS = (":streamGenerateContent", ":generateContent")


def request_format(path: str) -> str | None:
    """``openai``, ``anthropic`` or ``gemini``: the request body a chat path takes (or None)."""
    path = path.split("?", 1)[0]
    if path.endswith(_OPENAI_PATHS):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    if path.endswith(_GEMINI_PATHS):
        return "gemini"
    return None


def chat_request(path: str, model: str, text: str, max_tokens: int | None) -> bytes | None:
    """The body of a streaming chat request to ``path`` (see the module contract);
    ``max_tokens`` None leaves the model's own limit (Anthropic, which requires one: 1024)."""
    found = request_format(path)
    if found is None:
        return None
    request: dict[str, Any]
    if found == "gemini":
        request = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        if max_tokens is not None:
            request["generationConfig"] = {"maxOutputTokens": max_tokens}
        return dumps(request)
    request = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True}
    if found == "anthropic" and max_tokens is None:
        max_tokens = 1024  # required by Anthropic; what its own examples use
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    return dumps(request)
