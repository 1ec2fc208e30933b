"""The one error of the chat layer: ``ChatError``, a vendor-neutral API error.

Contract: everything the chat layer refuses (an invalid body, a bad key, an unknown model, a
backend that failed) is a ``ChatError`` carrying the HTTP status it implies and OpenAI's four
fields (``message``, ``type``, ``param``, ``code``). Each dialect renders it in its vendor's
shape, once, at the boundary: as a JSON body before the stream starts, or as its in-band error
frame after. ``as_chat_error`` turns any other exception into a 500 that leaks nothing of it.
"""

from __future__ import annotations

from rawsse._errors import RawsseError

__all__ = ["ChatError", "as_chat_error"]

# OpenAI's error ``type`` per status, as its API answers them.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class ChatError(RawsseError):
    """An API error with its HTTP ``status`` and OpenAI's fields.

    ``type`` defaults from the status (``invalid_request_error`` for 4xx, ``server_error`` for
    5xx); ``param`` names the offending request field (``messages[0].role``), ``code`` is a
    machine-readable reason (``model_not_found``, ``invalid_api_key``, ``invalid_type``...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.type = type or _OPENAI_TYPES.get(status, "server_error")
        self.param = param
        self.code = code

    def __str__(self) -> str:
        return f"{self.status} {self.message}"

    def __repr__(self) -> str:
        return (
            f"ChatError({self.status}, {self.message!r}, type={self.type!r}, "
            f"param={self.param!r}, code={self.code!r})"
        )

    @classmethod
    def invalid(cls, message: str, param: str | None = None, code: str | None = None) -> ChatError:
        """A 400: the request body is wrong at ``param``."""
        return cls(400, message, param=param, code=code)

    @classmethod
    def unauthorized(cls, presented: bool) -> ChatError:
        """A 401: no API key was sent (``presented`` false) or the one sent is not configured."""
        if not presented:
            return cls(
                401,
                "You didn't provide an API key. Provide it in an Authorization header "
                "(Authorization: Bearer YOUR_KEY) or the header your API dialect uses.",
                code="missing_api_key",
            )
        return cls(401, "Incorrect API key provided.", code="invalid_api_key")

    @classmethod
    def invalid_resume_token(cls) -> ChatError:
        """A 401: the ``resume_token`` sent is not this stream's (nor was a key sent)."""
        return cls(
            401,
            "The resume_token does not open this stream: each stream has its own, from its "
            "x-rawsse-resume-token response header, and changing the server's API keys "
            "invalidates them all.",
            param="resume_token",
            code="invalid_resume_token",
        )

    @classmethod
    def model_not_found(cls, model: str) -> ChatError:
        """A 404: no backend is mounted under ``model``."""
        return cls(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )

    @classmethod
    def too_large(cls, limit_bytes: int) -> ChatError:
        """A 413: the request body is over ``limit_bytes``."""
        return cls(
            413,
            f"Request body too large: the limit is {limit_bytes} bytes.",
            code="request_too_large",
        )

    @classmethod
    def server_error(cls, message: str = "The model backend failed.") -> ChatError:
        """A 500: the server (usually the model backend) failed."""
        return cls(500, message, code="server_error")


def as_chat_error(exc: BaseException) -> ChatError:
    """``exc`` itself if it is a ``ChatError``, else a generic 500 (its text stays in the log)."""
    if isinstance(exc, ChatError):
        return exc
    return ChatError.server_error()
