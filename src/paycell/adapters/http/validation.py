"""Request bodies and query parameters: parsed strictly, rejected with the field's name.

A body is a JSON object with exactly the fields an endpoint declares: unknown fields, missing
required ones and wrongly typed values are `invalid_field` (422), naming the field. Integers
must be JSON integers: `1.0`, `"100"` and `true` are all rejected, so no float or string ever
becomes money. Strings must be valid UTF-8 without NUL characters (neither storage backend
keeps those) and within their length limit.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from paycell.adapters.http.errors import INVALID_FIELD, MALFORMED_JSON, ApiError

# Ids, cursors and seconds fit the storage's signed 64-bit integers.
INTEGER_MAX: Final = (1 << 63) - 1
STRING_LENGTH_DEFAULT: Final = 256
PAGE_LIMIT_DEFAULT: Final = 100
PAGE_LIMIT_MAX: Final = 500

FieldKind = Literal["integer", "string", "boolean"]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: FieldKind
    description: str
    required: bool = True
    # Strings: at most this many characters (and at least one when required).
    max_length: int = STRING_LENGTH_DEFAULT
    choices: tuple[str, ...] = ()
    # Integers: bounds checked here; amounts are left to the platform (invalid_amount).
    minimum: int | None = None
    maximum: int | None = None
    example: object = None


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(INVALID_FIELD, f"{name}: {message}")


def _check_string(field: Field, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(field.name, "must be a string")
    if field.required and not value:
        raise _invalid(field.name, "must not be empty")
    if len(value) > field.max_length:
        raise _invalid(field.name, f"must be at most {field.max_length} characters")
    if "\x00" in value:
        raise _invalid(field.name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(field.name, "must be valid Unicode (no lone surrogates)") from None
    if field.choices and value not in field.choices:
        raise _invalid(field.name, f"must be one of {', '.join(field.choices)}")
    return value


def _check_integer(field: Field, value: object) -> int:
    # bool is a subclass of int in Python; JSON true is not an amount.
    if type(value) is not int:
        raise _invalid(field.name, "must be a JSON integer (no floats, strings or booleans)")
    if not -INTEGER_MAX <= value <= INTEGER_MAX:
        raise _invalid(field.name, "is out of range")
    if field.minimum is not None and value < field.minimum:
        raise _invalid(field.name, f"must be at least {field.minimum}")
    if field.maximum is not None and value > field.maximum:
        raise _invalid(field.name, f"must be at most {field.maximum}")
    return value


def check_value(field: Field, value: object) -> object:
    if field.kind == "string":
        return _check_string(field, value)
    if field.kind == "integer":
        return _check_integer(field, value)
    if type(value) is not bool:
        raise _invalid(field.name, "must be true or false")
    return value


def _reject_constant(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, object]:
    """The body as a JSON object; an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(MALFORMED_JSON, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(MALFORMED_JSON, "the body must be a JSON object")
    return data


def parse_body(raw: bytes, fields: Sequence[Field]) -> dict[str, object]:
    data = parse_json_object(raw)
    known = {field.name: field for field in fields}
    for name in data:
        if name not in known:
            raise _invalid(name, "is not a field of this request")
    parsed: dict[str, object] = {}
    for field in fields:
        if field.name not in data or data[field.name] is None:
            if field.required:
                raise _invalid(field.name, "is required")
            continue
        parsed[field.name] = check_value(field, data[field.name])
    return parsed


def query_integer(
    query: Mapping[str, str], name: str, default: int, minimum: int, maximum: int
) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise _invalid(name, f"must be an integer between {minimum} and {maximum}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise _invalid(name, f"must be an integer between {minimum} and {maximum}")
    return value


def page_parameters(query: Mapping[str, str]) -> tuple[int, int]:
    """(after, limit) of a cursor-paginated list: `after` is the last id of the page before."""
    after = query_integer(query, "after", 0, 0, INTEGER_MAX)
    limit = query_integer(query, "limit", PAGE_LIMIT_DEFAULT, 1, PAGE_LIMIT_MAX)
    return after, limit


def check_query(items: Sequence[tuple[str, str]], allowed: Sequence[str]) -> dict[str, str]:
    """The query string's parameters by name. An unknown one, or one given twice (which of its
    values would count is anyone's guess), is invalid."""
    query: dict[str, str] = {}
    for name, value in items:
        if name not in allowed:
            raise _invalid(name, "is not a parameter of this request")
        if name in query:
            raise _invalid(name, "is given more than once")
        query[name] = value
    return query
