"""Checking the JSON fields of a request body: the parsers' shared vocabulary.

Contract: a parser declares its request's fields once, as data: a tuple of ``Field``s (the key,
the JSON kind, the bounds, whether it is required, the ``ChatRequest`` attribute it fills, or a
``convert`` function for a structured value). ``read_fields(obj, fields)`` is the one function
that checks them, in the order declared, and returns their values by attribute. Underneath,
each ``as_*`` function takes a decoded JSON value and the field's ``param`` path (in the
dialect's own notation: ``messages[0].role``, ``generationConfig.temperature``) and returns the
value with a precise Python type, or raises ``ChatError`` 400 with that ``param``, a ``code`` and
a message in OpenAI's wording (the code names the rule: ``invalid_type``, ``invalid_value``,
``missing_required_parameter``, ``decimal_above_max_value``, ``empty_array`` ...). JSON ``true``
is never accepted as a number, although Python's ``bool`` is an ``int``. Integers are 64-bit:
one beyond that (which the JSON reader hands over as a float) is "above maximum value", not "a
decimal".
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rawsse.chat.errors import ChatError
from rawsse.jsonio import JSONDecodeError, loads

__all__ = [
    "Field",
    "as_body",
    "as_bool",
    "as_enum",
    "as_int",
    "as_list",
    "as_number",
    "as_object",
    "as_str",
    "load_json_body",
    "read_fields",
    "require",
]

# The range of a JSON integer rawsse accepts: 64-bit signed, as the vendors' APIs do.
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1


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
    value: Any, param: str, *, minimum: float | None = None, maximum: float | None = None
) -> int:
    """An integer in ``[minimum, maximum]`` (and in 64 bits)."""
    if isinstance(value, float) and value.is_integer() and not _INT_MIN <= value <= _INT_MAX:
        # The JSON reader hands an integer beyond 64 bits over as a float: it is still an
        # integer, one too large (or small) for any field.
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid_type(value, param, "an integer")
    low = _INT_MIN if minimum is None else minimum
    high = _INT_MAX if maximum is None else maximum
    _check_range(value, param, "integer", low, high)
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


def as_body(body: Any) -> dict[str, Any]:
    """The request body, which must be a JSON object."""
    if not isinstance(body, dict):
        raise ChatError.invalid("Invalid body: expected a JSON object.", code="invalid_type")
    return body


# -- fields declared as data -------------------------------------------------------------------

Kind = Literal["str", "bool", "int", "number", "object", "array", "enum", "section", "custom"]
# Builds a ``custom`` field's value from its JSON, its param and the values read before it.
Convert = Callable[[Any, str, Mapping[str, Any]], Any]
# Finds a key in an object: the value (None when absent) and the key it was found under.
Lookup = Callable[[Mapping[str, Any], str], tuple[Any, str]]


@dataclass(frozen=True, slots=True)
class Field:
    """One request field, declared once: where it is, what it must be, where its value goes.

    ``key`` is the JSON key; ``kind`` what its value must be: a JSON type (``str``, ``bool``,
    ``int``, ``number``, ``object``, ``array``), one of ``choices`` (``enum``), an object whose
    own ``fields`` are read into the same values (``section``), or anything ``convert`` makes of
    it (``custom``). ``minimum``/``maximum`` bound a number, ``non_empty`` a string or array,
    ``max_length`` an array. A ``required`` field must be present and not null; an absent one is
    skipped (the ``ChatRequest`` default stands). ``attr`` is the ``ChatRequest`` field the value
    fills (None: checked, then dropped; of two fields filling one attribute, the later wins).
    """

    key: str
    kind: Kind
    attr: str | None = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    non_empty: bool = False
    max_length: int | None = None
    fields: tuple[Field, ...] = ()
    convert: Convert | None = None


def _plain_lookup(obj: Mapping[str, Any], key: str) -> tuple[Any, str]:
    return obj.get(key), key


def read_fields(
    obj: Mapping[str, Any],
    fields: tuple[Field, ...],
    *,
    where: str = "",
    lookup: Lookup = _plain_lookup,
) -> dict[str, Any]:
    """Check ``obj``'s ``fields`` in the order declared; returns their values by ``attr``.

    Raises ``ChatError`` 400 at the first invalid field, its ``param`` being ``where`` plus the
    key as sent (``lookup`` may find a key under another spelling: Gemini's snake_case).
    """
    values: dict[str, Any] = {}
    for field in fields:
        value, key = lookup(obj, field.key)
        param = where + key
        if value is None:
            if field.required:
                require(obj, key, param)  # raises: missing_required_parameter
            continue
        if field.kind == "section":
            section = as_object(value, param)
            values.update(read_fields(section, field.fields, where=param + ".", lookup=lookup))
            continue
        checked = _check(field, value, param, values)
        if field.attr is not None:
            values[field.attr] = checked
    return values


def _check(field: Field, value: Any, param: str, read: Mapping[str, Any]) -> Any:
    """``value`` checked (or converted) as ``field`` declares."""
    kind = field.kind
    if kind == "str":
        return as_str(value, param, non_empty=field.non_empty)
    if kind == "bool":
        return as_bool(value, param)
    if kind == "int":
        return as_int(value, param, minimum=field.minimum, maximum=field.maximum)
    if kind == "number":
        return as_number(value, param, minimum=field.minimum, maximum=field.maximum)
    if kind == "object":
        return as_object(value, param)
    if kind == "array":
        return as_list(value, param, non_empty=field.non_empty, max_length=field.max_length)
    if kind == "enum":
        return as_enum(value, param, field.choices)
    if field.convert is None:
        raise TypeError(f"field {field.key!r} of kind {kind!r} has no convert function")
    return field.convert(value, param, read)
