"""The compiled fast path, when it was built: `paycell.core._fastpath`, checked at import.

The C module repeats four hot loops of the pure-Python core for large batches: checking that
events are well-formed, applying plain transfers sure to succeed, formatting the journal's
transfer records, and listing the accounts a batch updated. Two more are for the SQLite
adapter: `int64_rows`, the rows it binds, as plain tuples, `flat_chunks`, those rows
flattened for its multi-row INSERTs, and `pack_changes`, its account log's packed changes.
Each attribute here is that
function, or None when the module was not built (no C compiler where paycell was installed)
or is switched off (`PAYCELL_PURE_PYTHON=1`, which `paycell/__init__.py` reads); the core then
runs its pure-Python code, which is the definition of every rule and decides the same.
"""

from collections.abc import Callable
from typing import Any

from paycell.core.types import AccountFlags

ApplyPlain = Callable[..., int]
WellFormedPrefix = Callable[[list[Any], type], int]
TransferLines = Callable[[list[Any]], bytes | None]
UpdatedAccounts = Callable[[dict[int, list[int]], dict[int, Any], type], dict[int, Any] | None]
Int64Rows = Callable[[list[Any], tuple[int, ...], Callable[[Any], Any]], list[Any]]
FlatChunks = Callable[[list[Any], int, int], list[list[Any]] | None]
PackChanges = Callable[[list[Any]], bytes | None]


def _load() -> Any:
    try:
        from paycell.core import _fastpath
    except ImportError:
        return None
    expected = {
        "DEBITS_MUST_NOT_EXCEED_CREDITS": int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),
        "CREDITS_MUST_NOT_EXCEED_DEBITS": int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS),
        "HISTORY": int(AccountFlags.HISTORY),
        "CLOSED": int(AccountFlags.CLOSED),
        # id, debit, credit, amount, pending_id, timeout, ledger, code, flags, timestamp
        "transfer_fields": (0, 1, 2, 3, 4, 8, 9, 10, 11, 12),
        # debits_pending, debits_posted, credits_pending, credits_posted, ledger, flags
        "account_fields": (1, 2, 3, 4, 9, 11),
    }
    # A module built for other records or flags must not run on these: the core runs pure
    # Python instead (and the suite's check that the module is built fails).
    built_with = _fastpath.constants()
    built_with.pop("source_sha256", None)
    return _fastpath if built_with == expected else None


def source_sha256() -> str | None:
    """The SHA-256 of the C source the module was built from, as setup.py compiled it in."""
    return _module.constants()["source_sha256"] if _module is not None else None


_module = _load()

BUILT: bool = _module is not None
"""Whether the compiled module was built and loads."""

apply_plain: ApplyPlain | None = None
well_formed_prefix: WellFormedPrefix | None = None
transfer_lines: TransferLines | None = None
updated_accounts: UpdatedAccounts | None = None
int64_rows: Int64Rows | None = None
flat_chunks: FlatChunks | None = None
pack_changes: PackChanges | None = None


def switch(enabled: bool) -> None:
    """Run the core with (True) or without (False) the compiled fast path from now on.

    Switching it on needs the module to have been built (`BUILT`).
    """
    global apply_plain, well_formed_prefix, transfer_lines, updated_accounts, int64_rows
    global flat_chunks, pack_changes
    if enabled and _module is None:
        raise RuntimeError("paycell.core._fastpath was not built (see docs/performance.md)")
    apply_plain = _module.apply_plain if enabled else None
    well_formed_prefix = _module.well_formed_prefix if enabled else None
    transfer_lines = _module.transfer_lines if enabled else None
    updated_accounts = _module.updated_accounts if enabled else None
    int64_rows = _module.int64_rows if enabled else None
    flat_chunks = _module.flat_chunks if enabled else None
    pack_changes = _module.pack_changes if enabled else None


def enabled() -> bool:
    return apply_plain is not None


switch(BUILT)
