# Types of the compiled fast path (src/paycell/core/_fastpath.c); see paycell.core.compiled.
from collections.abc import Callable
from typing import Any

def apply_plain(
    events: list[Any],
    start: int,
    timestamp_base: int,
    accounts: dict[int, Any],
    balances: dict[int, list[int]],
    transfers: dict[int, Any],
    failed: dict[int, str],
    created: list[Any],
    created_by_id: dict[int, Any],
    transfer_type: type,
    /,
) -> int: ...
def well_formed_prefix(events: list[Any], transfer_type: type, /) -> int: ...
def transfer_lines(transfers: list[Any], /) -> bytes | None: ...
def updated_accounts(
    balances: dict[int, list[int]], accounts: dict[int, Any], account_type: type, /
) -> dict[int, Any] | None: ...
def constants() -> dict[str, Any]: ...
def pack_changes(accounts: list[Any], /) -> bytes | None: ...
def flat_chunks(rows: list[Any], chunk: int, width: int, /) -> list[list[Any]] | None: ...
def int64_rows(
    records: list[Any], fields: tuple[int, ...], fallback: Callable[[Any], Any], /
) -> list[Any]: ...
