"""The journal's hash chain: tamper evidence for every committed batch.

Each committed batch appends one journal entry whose hash covers the previous entry's hash and
a canonical encoding of everything the batch committed: the accounts it created (as created),
the transfers it created (as stored, with their ledger-assigned timestamps and effective
amounts), the pending transfers it expired and the ids it remembered as failed. Altering,
inserting or deleting any committed row changes what `paycell verify` recomputes for that batch,
and so breaks the chain from there on.

The encoding is text, one record per line, fields in decimal separated by spaces, with a
one-letter record kind first. It is simple to reproduce in any language, and `bytes %` formats
a record in a single C call, which keeps hashing off the hot path's critical cost.
"""

import hashlib
from collections.abc import Iterable
from typing import Final, NamedTuple

from paycell.core import compiled
from paycell.core.types import Account, Transfer

GENESIS_HASH: Final = bytes(32)

_ACCOUNT_LINE: Final = b"A %d %d %d %d %d %d %d %d %d %d %d %d %d\n"
_TRANSFER_LINE: Final = b"T %d %d %d %d %d %d %d %d %d %d %d %d %d\n"
_EXPIRY_LINE: Final = b"E %d %d\n"
_FAILURE_LINE: Final = b"F %d %s %d\n"


class Expiry(NamedTuple):
    """A pending transfer released because its timeout passed, at `timestamp`."""

    pending_id: int
    timestamp: int


class Failure(NamedTuple):
    """A transfer id that failed with a transient result; a retry returns id_already_failed."""

    id: int
    result: str
    timestamp: int


class JournalEntry(NamedTuple):
    batch_number: int
    kind: str
    timestamp_first: int
    timestamp_last: int
    event_count: int
    previous_hash: bytes
    hash: bytes


def batch_hash(
    previous_hash: bytes,
    batch_number: int,
    kind: str,
    accounts: Iterable[Account],
    transfers: Iterable[Transfer],
    expiries: Iterable[Expiry],
    failures: Iterable[Failure],
) -> bytes:
    """The chained hash of one batch. Records must be given in timestamp order."""
    digest = hashlib.sha256(previous_hash)
    digest.update(b"batch %d %s\n" % (batch_number, kind.encode()))
    # map() over the bound format method: no Python-level loop per record.
    digest.update(b"".join(map(_ACCOUNT_LINE.__mod__, accounts)))
    lines = (
        compiled.transfer_lines(transfers)
        if compiled.transfer_lines is not None and type(transfers) is list
        else None
    )
    if lines is None:
        lines = b"".join(map(_TRANSFER_LINE.__mod__, transfers))
    digest.update(lines)
    digest.update(b"".join(map(_EXPIRY_LINE.__mod__, expiries)))
    digest.update(
        b"".join([_FAILURE_LINE % (f.id, f.result.encode(), f.timestamp) for f in failures])
    )
    return digest.digest()
