"""The validated chat request a model backend receives, the same whatever dialect sent it.

Contract: a ``ChatRequest`` is built only by the dialects' parsers (``parse_openai``,
``parse_anthropic``, ``parse_gemini``), after every field was checked, so a backend can trust it:
messages are normalised (each one's content is plain text, tool calls and tool results are
fields), limits are in range, and vendor spellings are unified (``max_completion_tokens``,
Anthropic ``max_tokens`` and Gemini ``maxOutputTokens`` are all ``max_tokens``). JSON sub-values
the framework does not interpret (tool parameter schemas, ``response_format``, ``extra``) are
kept as the client sent them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "MAX_CHOICES",
    "ChatRequest",
    "Message",
    "Role",
    "Tool",
    "ToolCall",
    "ToolChoice",
]

# rawsse's cap on ``n`` (OpenAI allows 128): a demo server answers n streams per request, and 8
# is plenty to test interleaving without letting one request multiply the work without bound.
MAX_CHOICES = 8

Role: TypeAlias = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call an assistant message made: its id, the tool's name, the JSON arguments."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One conversation turn, its content flattened to text.

    ``tool_call_id`` is set on ``tool`` messages (the call they answer); ``tool_calls`` on
    ``assistant`` messages that called tools. ``name`` is the optional participant name.
    """

    role: Role
    text: str
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: name, description and JSON Schema of its parameters."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """How the model should use the tools: ``auto``, ``none``, ``required`` (any tool), or
    ``function`` (the tool called ``name``)."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request, dialect-neutral.

    ``include_usage`` is true when the client asked for usage in the stream (OpenAI
    ``stream_options.include_usage``; always for Anthropic and Gemini, which always send it).
    ``extra`` is the request's ``rawsse`` object (load-test options of the demo models; empty
    when absent); ``dialect`` names the parser that built the request.
    """

    model: str
    messages: tuple[Message, ...]
    dialect: str = "openai"
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    response_format: Mapping[str, Any] | None = None
    user: str | None = None
    search_recency_filter: Literal["month", "week", "day", "hour"] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def last_user_text(self) -> str:
        """The text of the last ``user`` message ("" when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    def prompt_tokens(self) -> int:
        """rawsse's prompt token estimate: the number of whitespace-separated words in the
        messages' text (tool call arguments included). Crude, documented, and deterministic;
        a backend that knows better yields a ``Usage``."""
        words = 0
        for message in self.messages:
            words += len(message.text.split())
            for call in message.tool_calls:
                words += len(call.arguments.split())
        return words
