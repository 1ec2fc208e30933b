"""Checking one JSON field of a request body: the parsers' shared vocabulary.

Contract: each function takes a decoded JSON value and the field's ``param`` path (in the
dialect's own notation: ``messages[0].role``, ``generationConfig.temperature``) and returns the
value with a precise Python type, or raises ``ChatError`` 400 with that ``param``, a ``code`` and
a message in OpenAI's wording (the code names the rule: ``invalid_type``, ``invalid_value``,
``missing_required_parameter``, ``decimal_above_max_value``, ``empty_array`` ...). JSON ``true``
is never accepted as a number, although Python's ``bool`` is an ``int``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from rawsse.chat.errors import ChatError
from rawsse.jsonio import JSONDecodeError, loads

__all__ = [
    "as_bool",
    "as_enum",
    "as_int",
    "as_list",
    "as_number",
    "as_object",
    "as_str",
    "load_json_body",
    "require",
]


def load_json_body(raw: bytes) -> Any:
    """Decode a request body; raises ``ChatError`` 400 when it is not JSON."""
    try:
        return loads(raw)
    except JSONDecodeError as exc:
        raise ChatError.invalid(
            "We could not parse the JSON body of your request. The API expects a JSON payload.",
            code="invalid_json",
        ) from exc


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(value: Any, param: str, expected: str) -> ChatError:
    return ChatError.invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_describe(value)} instead.",
        param=param,
        code="invalid_type",
    )


def require(obj: Mapping[str, Any], key: str, param: str) -> Any:
    """``obj[key]``, which must be present and not null."""
    value = obj.get(key)
    if value is None:
        raise ChatError.invalid(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    return value


def as_str(value: Any, param: str, *, non_empty: bool = False) -> str:
    """A string (non-empty if asked)."""
    if not isinstance(value, str):
        raise _invalid_type(value, param, "a string")
    if non_empty and not value:
        raise ChatError.invalid(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param=param,
            code="empty_string",
        )
    return value


def as_bool(value: Any, param: str) -> bool:
    """A boolean."""
    if not isinstance(value, bool):
        raise _invalid_type(value, param, "a boolean")
    return value


def _check_range(
    number: float, param: str, kind: str, minimum: float | None, maximum: float | None
) -> None:
    if minimum is not None and number < minimum:
        raise ChatError.invalid(
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {minimum}, "
            f"but got {number} instead.",
            param=param,
            code=f"{kind}_below_min_value",
        )
    if maximum is not None and number > maximum:
        raise ChatError.invalid(
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {maximum}, "
            f"but got {number} instead.",
            param=param,
            code=f"{kind}_above_max_value",
        )


def as_int(
    value: Any, param: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An integer in ``[minimum, maximum]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid_type(value, param, "an integer")
    _check_range(value, param, "integer", minimum, maximum)
    return value


def as_number(
    value: Any, param: str, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    """A number (integer or decimal) in ``[minimum, maximum]``, as a float."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _invalid_type(value, param, "a decimal")
    _check_range(value, param, "decimal", minimum, maximum)
    return float(value)


def as_object(value: Any, param: str) -> dict[str, Any]:
    """A JSON object."""
    if not isinstance(value, dict):
        raise _invalid_type(value, param, "an object")
    return value


def as_list(
    value: Any, param: str, *, non_empty: bool = False, max_length: int | None = None
) -> list[Any]:
    """A JSON array, non-empty if asked, with at most ``max_length`` items."""
    if not isinstance(value, list):
        raise _invalid_type(value, param, "an array")
    if non_empty and not value:
        raise ChatError.invalid(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    if max_length is not None and len(value) > max_length:
        raise ChatError.invalid(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{max_length}, but got an array with length {len(value)} instead.",
            param=param,
            code="array_above_max_length",
        )
    return value


def as_enum(value: Any, param: str, choices: Collection[str]) -> str:
    """One of the strings ``choices``."""
    if not isinstance(value, str):
        raise _invalid_type(value, param, "a string")
    if value not in choices:
        quoted = [f"'{choice}'" for choice in choices]
        supported = ", ".join(quoted[:-1]) + f" and {quoted[-1]}" if len(quoted) > 1 else quoted[0]
        raise ChatError.invalid(
            f"Invalid value for '{param}': '{value}'. Supported values are: {supported}.",
            param=param,
            code="invalid_value",
        )
    return value
