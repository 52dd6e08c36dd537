"""JSON lines in and out: accounts and transfers as one JSON object per line.

Input objects use the `Account`/`Transfer` field names. `flags` is an integer or a list of flag
names (`["pending", "linked"]`, the lower-case names of `AccountFlags`/`TransferFlags`). Every
integer field must be a JSON integer: a float or a string amount is rejected rather than
rounded, and widths are checked here, naming the event and the field, so that a whole input can
be checked before its first batch is written.

Output is one JSON object per record, every field a JSON integer (ids and amounts can exceed
2**64; JSON integers have no width).
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from enum import IntFlag
from typing import IO, Any, Final, TypeVar

from paycell.core.errors import InvalidFieldError, InvalidInputError
from paycell.core.events import ACCOUNT_FIELD_MAXIMUMS, TRANSFER_FIELD_MAXIMUMS
from paycell.core.types import Account, AccountBalance, AccountFlags, Transfer, TransferFlags


class InvalidJsonError(InvalidInputError):
    """A line of input is not a JSON object."""

    code = "invalid_json"


class UnknownFieldError(InvalidFieldError):
    """An input object names a field the record does not have."""

    code = "unknown_field"


class UnknownFlagError(InvalidFieldError):
    """A flag name that is not one of the record's flags."""

    code = "unknown_flag"


_RECORD = TypeVar("_RECORD", Account, Transfer)

_ACCOUNT_MAXIMUMS: Final = dict(ACCOUNT_FIELD_MAXIMUMS)
_TRANSFER_MAXIMUMS: Final = dict(TRANSFER_FIELD_MAXIMUMS)


def _flag_names(flags: type[IntFlag]) -> dict[str, int]:
    return {member.name.lower(): int(member) for member in flags if member.name and member.value}


ACCOUNT_FLAG_NAMES: Final = _flag_names(AccountFlags)
TRANSFER_FLAG_NAMES: Final = _flag_names(TransferFlags)


def parse_flags(value: object, names: Mapping[str, int], index: int) -> object:
    """An integer passes through (its width is checked with the other fields); names combine."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value
    flags = 0
    for name in value:
        if not isinstance(name, str) or name.lower() not in names:
            raise UnknownFlagError(
                f"unknown flag {name!r}; known flags: {', '.join(sorted(names))}",
                field="flags",
                index=index,
            )
        flags |= names[name.lower()]
    return flags


def _check_integer(name: str, value: object, maximum: int, index: int) -> int:
    # bool is an int subclass; a float amount must never be silently truncated.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidFieldError(
            f"must be a JSON integer, got {type(value).__name__} {value!r}",
            field=name,
            index=index,
        )
    if value < 0:
        raise InvalidFieldError(f"must not be negative, got {value}", field=name, index=index)
    if value > maximum:
        raise InvalidFieldError(
            f"must fit in {maximum.bit_length()} unsigned bits, got {value}",
            field=name,
            index=index,
        )
    return value


def _record_from_object(
    kind: type[_RECORD],
    maximums: Mapping[str, int],
    flag_names: Mapping[str, int],
    data: object,
    index: int,
) -> _RECORD:
    if not isinstance(data, dict):
        raise InvalidJsonError(f"event {index}: expected a JSON object, got {type(data).__name__}")
    values: dict[str, int] = {}
    for name, value in data.items():
        if name not in maximums:
            raise UnknownFieldError(
                f"unknown field; {kind.__name__} fields: {', '.join(kind._fields)}",
                field=str(name),
                index=index,
            )
        if name == "flags":
            value = parse_flags(value, flag_names, index)
        values[name] = _check_integer(name, value, maximums[name], index)
    if "id" not in values:
        raise InvalidFieldError("is required", field="id", index=index)
    return kind(**values)


def account_from_object(data: object, index: int = 0) -> Account:
    return _record_from_object(Account, _ACCOUNT_MAXIMUMS, ACCOUNT_FLAG_NAMES, data, index)


def transfer_from_object(data: object, index: int = 0) -> Transfer:
    return _record_from_object(Transfer, _TRANSFER_MAXIMUMS, TRANSFER_FLAG_NAMES, data, index)


def read_json_lines(stream: IO[str]) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for every non-blank line; bad JSON raises naming the line."""
    line_number = 0
    try:
        for line_number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidJsonError(f"line {line_number}: not valid JSON: {error.msg}") from None
    except UnicodeDecodeError:
        raise InvalidJsonError(f"line {line_number + 1}: not UTF-8 text") from None


def read_accounts(stream: IO[str]) -> list[Account]:
    return [
        account_from_object(data, index) for index, (_, data) in enumerate(read_json_lines(stream))
    ]


def read_transfers(stream: IO[str]) -> list[Transfer]:
    return [
        transfer_from_object(data, index) for index, (_, data) in enumerate(read_json_lines(stream))
    ]


def record_to_json(record: Account | Transfer | AccountBalance) -> str:
    return json.dumps(record._asdict(), separators=(", ", ": "))


def dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(", ", ": "))


def write_lines(stream: IO[str], lines: Iterable[str]) -> None:
    for line in lines:
        stream.write(line + "\n")
