"""The chat layer: mount a model behind the endpoints LLM clients already speak.

A model backend yields one neutral stream of deltas (``rawsse.chat.deltas``); a dialect turns it
into one vendor's frames (OpenAI, Anthropic, Gemini, ChatGPT web, the generic envelope). All of
it is pure: no sockets here.
"""

from typing import TYPE_CHECKING

from rawsse._lazy import lazy_exports

if TYPE_CHECKING:
    from rawsse.chat.anthropic_dialect import (
        ANTHROPIC,
        AnthropicStream,
        anthropic_error_body,
    )
    from rawsse.chat.anthropic_request import parse_anthropic
    from rawsse.chat.auth import (
        authenticate,
        check_api_key,
        presented_key,
    )
    from rawsse.chat.chatgpt_web_dialect import CHATGPT_WEB, ChatGPTWebStream
    from rawsse.chat.deltas import (
        Citations,
        Delta,
        Finish,
        FinishReason,
        ModelBackend,
        ReasoningDelta,
        TextDelta,
        ToolCallDelta,
        Usage,
    )
    from rawsse.chat.demo import demo_models
    from rawsse.chat.demo_script import ModelOptions, parse_model_options
    from rawsse.chat.dialect import (
        SSE_CONTENT_TYPE,
        Dialect,
        DialectStream,
    )
    from rawsse.chat.envelope_dialect import ENVELOPE, EnvelopeStream
    from rawsse.chat.errors import ChatError, as_chat_error
    from rawsse.chat.fields import load_json_body
    from rawsse.chat.gemini_dialect import (
        GEMINI,
        GeminiStream,
        gemini_error_body,
    )
    from rawsse.chat.gemini_request import parse_gemini
    from rawsse.chat.grammar import (
        AnthropicGrammar,
        GrammarError,
        OpenAIGrammar,
        check_anthropic_stream,
        check_openai_stream,
    )
    from rawsse.chat.mount import ChatService, mount_chat
    from rawsse.chat.openai_dialect import (
        OPENAI,
        OpenAIStream,
        openai_error_body,
        openai_models_body,
    )
    from rawsse.chat.openai_request import parse_openai
    from rawsse.chat.request import (
        MAX_CHOICES,
        ChatRequest,
        Message,
        Role,
        Tool,
        ToolCall,
        ToolChoice,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "rawsse.chat.anthropic_dialect": ("ANTHROPIC", "AnthropicStream", "anthropic_error_body"),
        "rawsse.chat.anthropic_request": ("parse_anthropic",),
        "rawsse.chat.auth": ("authenticate", "check_api_key", "presented_key"),
        "rawsse.chat.chatgpt_web_dialect": ("CHATGPT_WEB", "ChatGPTWebStream"),
        "rawsse.chat.deltas": (
            "Citations",
            "Delta",
            "Finish",
            "FinishReason",
            "ModelBackend",
            "ReasoningDelta",
            "TextDelta",
            "ToolCallDelta",
            "Usage",
        ),
        "rawsse.chat.demo": ("demo_models",),
        "rawsse.chat.demo_script": ("ModelOptions", "parse_model_options"),
        "rawsse.chat.dialect": ("SSE_CONTENT_TYPE", "Dialect", "DialectStream"),
        "rawsse.chat.envelope_dialect": ("ENVELOPE", "EnvelopeStream"),
        "rawsse.chat.errors": ("ChatError", "as_chat_error"),
        "rawsse.chat.fields": ("load_json_body",),
        "rawsse.chat.gemini_dialect": ("GEMINI", "GeminiStream", "gemini_error_body"),
        "rawsse.chat.gemini_request": ("parse_gemini",),
        "rawsse.chat.grammar": (
            "AnthropicGrammar",
            "GrammarError",
            "OpenAIGrammar",
            "check_anthropic_stream",
            "check_openai_stream",
        ),
        "rawsse.chat.mount": ("ChatService", "mount_chat"),
        "rawsse.chat.openai_dialect": (
            "OPENAI",
            "OpenAIStream",
            "openai_error_body",
            "openai_models_body",
        ),
        "rawsse.chat.openai_request": ("parse_openai",),
        "rawsse.chat.request": (
            "MAX_CHOICES",
            "ChatRequest",
            "Message",
            "Role",
            "Tool",
            "ToolCall",
            "ToolChoice",
        ),
    },
)

__all__ = [
    "ANTHROPIC",
    "CHATGPT_WEB",
    "ENVELOPE",
    "GEMINI",
    "MAX_CHOICES",
    "OPENAI",
    "SSE_CONTENT_TYPE",
    "AnthropicGrammar",
    "AnthropicStream",
    "ChatError",
    "ChatGPTWebStream",
    "ChatRequest",
    "ChatService",
    "Citations",
    "Delta",
    "Dialect",
    "DialectStream",
    "EnvelopeStream",
    "Finish",
    "FinishReason",
    "GeminiStream",
    "GrammarError",
    "Message",
    "ModelBackend",
    "ModelOptions",
    "OpenAIGrammar",
    "OpenAIStream",
    "ReasoningDelta",
    "Role",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "anthropic_error_body",
    "as_chat_error",
    "authenticate",
    "check_anthropic_stream",
    "check_api_key",
    "check_openai_stream",
    "demo_models",
    "gemini_error_body",
    "load_json_body",
    "mount_chat",
    "openai_error_body",
    "openai_models_body",
    "parse_anthropic",
    "parse_gemini",
    "parse_model_options",
    "parse_openai",
    "presented_key",
]
