"""`paycell ledger ...`: create, look up and query accounts and transfers as JSON lines.

Writes check the whole input before the first batch is written, so malformed input changes
nothing; the input is then written in batches of up to `BATCH_EVENTS_MAX` events, one durable
commit each. A linked chain is never split across two batches: a batch ends at a chain's end
when the chain fits (a chain longer than one batch is left to the ledger to reject).
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import IO, TypeVar

from paycell.adapters.cli.codec import dumps, record_to_json
from paycell.core.limits import BATCH_EVENTS_MAX
from paycell.core.results import EXISTS_RESULTS, CreateAccountResult, CreateTransferResult
from paycell.core.types import (
    Account,
    AccountFilter,
    AccountFilterFlags,
    AccountFlags,
    QueryFilter,
    QueryFilterFlags,
    Transfer,
    TransferFlags,
)
from paycell.ledger import Ledger

EXIT_OK = 0
EXIT_REJECTED = 1

_EVENT = TypeVar("_EVENT", Account, Transfer)
_RESULT = TypeVar("_RESULT", CreateAccountResult, CreateTransferResult)


def split_batches(
    events: Sequence[_EVENT], linked: int, batch_size: int = BATCH_EVENTS_MAX
) -> list[Sequence[_EVENT]]:
    """Cut events into batches of at most `batch_size`, preferring to cut between chains."""
    batches: list[Sequence[_EVENT]] = []
    start = 0
    while start < len(events):
        end = min(start + batch_size, len(events))
        if end < len(events):
            # Step back to just after the last event that closes a chain (no linked flag).
            cut = end
            while cut > start and events[cut - 1].flags & linked:
                cut -= 1
            if cut > start:
                end = cut
        batches.append(events[start:end])
        start = end
    return batches


def _write(
    events: Sequence[_EVENT],
    linked: int,
    create: Callable[[Sequence[_EVENT]], list[_RESULT]],
    lookup: Callable[[Sequence[int]], list[_EVENT]],
    same: Callable[[_EVENT, _EVENT], bool],
    out: IO[str],
) -> int:
    rejected = False
    index = 0
    for batch in split_batches(events, linked):
        results = create(batch)
        applied = [r.value == "ok" or r in EXISTS_RESULTS for r in results]
        # Replaying a committed linked chain returns `exists` for its first event and, as in
        # TigerBeetle, `linked_event_failed` for the rest: those are in the ledger as asked
        # when a record with the same id and content exists.
        unsure = [
            event
            for event, result in zip(batch, results, strict=True)
            if result.value == "linked_event_failed"
        ]
        stored = {record.id: record for record in lookup([e.id for e in unsure])} if unsure else {}
        for position, (event, result) in enumerate(zip(batch, results, strict=True)):
            out.write(dumps({"index": index, "id": event.id, "result": result.value}) + "\n")
            record = stored.get(event.id)
            if not applied[position] and not (record is not None and same(event, record)):
                rejected = True
            index += 1
        out.flush()
    return EXIT_REJECTED if rejected else EXIT_OK


def _same_account(asked: Account, stored: Account) -> bool:
    closed = int(AccountFlags.CLOSED)
    return (
        asked.user_data_128 == stored.user_data_128
        and asked.user_data_64 == stored.user_data_64
        and asked.user_data_32 == stored.user_data_32
        and asked.ledger == stored.ledger
        and asked.code == stored.code
        and asked.flags & ~closed == stored.flags & ~closed
    )


def _same_transfer(asked: Transfer, stored: Transfer) -> bool:
    return asked == stored._replace(timestamp=asked.timestamp)


def write_accounts(ledger: Ledger, accounts: Sequence[Account], out: IO[str]) -> int:
    return _write(
        accounts,
        int(AccountFlags.LINKED),
        ledger.create_accounts,
        ledger.lookup_accounts,
        _same_account,
        out,
    )


def write_transfers(ledger: Ledger, transfers: Sequence[Transfer], out: IO[str]) -> int:
    return _write(
        transfers,
        int(TransferFlags.LINKED),
        ledger.create_transfers,
        ledger.lookup_transfers,
        _same_transfer,
        out,
    )


def _lookup(found_ids: Sequence[int], wanted: Sequence[int], kind: str) -> int:
    missing = [i for i in wanted if i not in set(found_ids)]
    for i in missing:
        print(f"{kind} {i}: not found", file=sys.stderr)
    return EXIT_REJECTED if missing else EXIT_OK


def lookup_accounts(ledger: Ledger, ids: Sequence[int], out: IO[str]) -> int:
    accounts = ledger.lookup_accounts(ids)
    for account in accounts:
        out.write(record_to_json(account) + "\n")
    return _lookup([a.id for a in accounts], ids, "account")


def lookup_transfers(ledger: Ledger, ids: Sequence[int], out: IO[str]) -> int:
    transfers = ledger.lookup_transfers(ids)
    for transfer in transfers:
        out.write(record_to_json(transfer) + "\n")
    return _lookup([t.id for t in transfers], ids, "transfer")


def account_filter_from_arguments(arguments: argparse.Namespace) -> AccountFilter:
    flags = 0
    if arguments.debits:
        flags |= AccountFilterFlags.DEBITS
    if arguments.credits:
        flags |= AccountFilterFlags.CREDITS
    if not flags:
        flags = AccountFilterFlags.DEBITS | AccountFilterFlags.CREDITS
    if arguments.reversed:
        flags |= AccountFilterFlags.REVERSED
    return AccountFilter(
        account_id=arguments.account_id,
        user_data_128=arguments.user_data_128,
        user_data_64=arguments.user_data_64,
        user_data_32=arguments.user_data_32,
        code=arguments.code,
        timestamp_min=arguments.timestamp_min,
        timestamp_max=arguments.timestamp_max,
        limit=arguments.limit,
        flags=int(flags),
    )


def query_filter_from_arguments(arguments: argparse.Namespace) -> QueryFilter:
    return QueryFilter(
        user_data_128=arguments.user_data_128,
        user_data_64=arguments.user_data_64,
        user_data_32=arguments.user_data_32,
        ledger=arguments.ledger,
        code=arguments.code,
        timestamp_min=arguments.timestamp_min,
        timestamp_max=arguments.timestamp_max,
        limit=arguments.limit,
        flags=int(QueryFilterFlags.REVERSED if arguments.reversed else QueryFilterFlags.NONE),
    )


def account_transfers(ledger: Ledger, arguments: argparse.Namespace, out: IO[str]) -> int:
    for transfer in ledger.get_account_transfers(account_filter_from_arguments(arguments)):
        out.write(record_to_json(transfer) + "\n")
    return EXIT_OK


def account_balances(ledger: Ledger, arguments: argparse.Namespace, out: IO[str]) -> int:
    for balance in ledger.get_account_balances(account_filter_from_arguments(arguments)):
        out.write(record_to_json(balance) + "\n")
    return EXIT_OK


def query_accounts(ledger: Ledger, arguments: argparse.Namespace, out: IO[str]) -> int:
    for account in ledger.query_accounts(query_filter_from_arguments(arguments)):
        out.write(record_to_json(account) + "\n")
    return EXIT_OK


def query_transfers(ledger: Ledger, arguments: argparse.Namespace, out: IO[str]) -> int:
    for transfer in ledger.query_transfers(query_filter_from_arguments(arguments)):
        out.write(record_to_json(transfer) + "\n")
    return EXIT_OK


def expire(ledger: Ledger, out: IO[str]) -> int:
    out.write(dumps({"expired": ledger.expire_pending_transfers()}) + "\n")
    return EXIT_OK
