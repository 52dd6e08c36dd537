"""Every create result, one table row each: a small setup, the event, the result it must give.

Each row also runs through the reference model (tests/model), which must agree, and every
rejected batch must leave balances, flags and transfers exactly as they were. Precedence rows
show that an event breaking two rules gets the result declared first in `paycell.core.results`.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from paycell import (
    AMOUNT_MAX,
    Account,
    AccountFlags,
    CreateAccountResult,
    CreateTransferResult,
    Ledger,
    Transfer,
    TransferFlags,
)
from tests.model.reference_ledger import ReferenceLedger

R = CreateTransferResult
A = CreateAccountResult
F = TransferFlags
AF = AccountFlags

START_NS = 1_700_000_000 * 1_000_000_000
TICK_NS = 1_000_000  # the clock moves 1 ms before every operation
SECOND = 1_000_000_000
UNKNOWN = 99  # an account id that never exists

# Accounts every row starts with.
BASE_ACCOUNTS = [
    Account(id=1, ledger=1, code=1),
    Account(id=2, ledger=1, code=1),
    Account(id=3, ledger=2, code=1),
    Account(id=4, ledger=1, code=1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS),
    Account(id=5, ledger=1, code=1, flags=AF.CREDITS_MUST_NOT_EXCEED_DEBITS),
    Account(id=6, ledger=1, code=1, flags=AF.HISTORY),
    Account(id=7, ledger=1, code=1, user_data_128=11, user_data_64=12, user_data_32=13),
]
ACCOUNT_IDS = [a.id for a in BASE_ACCOUNTS]


def tr(id: int, dr: int = 1, cr: int = 2, amount: int = 10, **fields: int) -> Transfer:
    """A plain transfer on ledger 1 with code 1 unless told otherwise."""
    fields.setdefault("ledger", 1)
    fields.setdefault("code", 1)
    return Transfer(id=id, debit_account_id=dr, credit_account_id=cr, amount=amount, **fields)


def pending(id: int, dr: int = 1, cr: int = 2, amount: int = 10, **fields: int) -> Transfer:
    fields["flags"] = int(fields.get("flags", 0) | F.PENDING)
    return tr(id, dr, cr, amount, **fields)


def post(id: int, pending_id: int, amount: int = AMOUNT_MAX, **fields: int) -> Transfer:
    fields["flags"] = int(fields.get("flags", 0) | F.POST_PENDING_TRANSFER)
    return Transfer(id=id, pending_id=pending_id, amount=amount, **fields)


def void(id: int, pending_id: int, amount: int = 0, **fields: int) -> Transfer:
    fields["flags"] = int(fields.get("flags", 0) | F.VOID_PENDING_TRANSFER)
    return Transfer(id=id, pending_id=pending_id, amount=amount, **fields)


# A committed plain transfer that replays are compared against.
PLAIN = tr(101, user_data_128=1, user_data_64=2, user_data_32=3)
# A committed pending transfer of 10 from 1 to 2 that posts and voids refer to.
PENDING = pending(100, user_data_128=4, user_data_64=5, user_data_32=6)


class Clock:
    def __init__(self, start: int = START_NS) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@dataclass(frozen=True)
class Case:
    id: str
    events: Sequence[Transfer]
    expected: Sequence[CreateTransferResult]
    setup: Sequence[Sequence[Transfer]] = ()
    # Nanoseconds the clock moves after the setup (and one tick), before the events.
    advance_ns: int = 0
    clock_start: int = START_NS


@dataclass(frozen=True)
class AccountCase:
    id: str
    events: Sequence[Account]
    expected: Sequence[CreateAccountResult]
    setup: Sequence[Sequence[Account]] = field(default=())


# fmt: off
TRANSFER_CASES = [
    # ---------------------------------------------------------------- one row per result code
    Case("ok: a plain transfer between two accounts of its ledger", [tr(1)], [R.OK]),
    Case("linked_event_failed: a chain member is rolled back when a later member fails",
         [tr(1, flags=F.LINKED), tr(2, dr=UNKNOWN)],
         [R.LINKED_EVENT_FAILED, R.DEBIT_ACCOUNT_NOT_FOUND]),
    Case("linked_event_chain_open: the batch's last event is linked",
         [tr(1, flags=F.LINKED)], [R.LINKED_EVENT_CHAIN_OPEN]),
    Case("timestamp_must_be_zero: the client may not choose a timestamp",
         [tr(1, timestamp=1)], [R.TIMESTAMP_MUST_BE_ZERO]),
    Case("reserved_flag: a padding flag bit is set", [tr(1, flags=1 << 9)], [R.RESERVED_FLAG]),
    Case("reserved_flag: the imported flag is reserved in paycell",
         [tr(1, flags=F.IMPORTED)], [R.RESERVED_FLAG]),
    Case("id_must_not_be_zero", [tr(0)], [R.ID_MUST_NOT_BE_ZERO]),
    Case("id_must_not_be_int_max", [tr(AMOUNT_MAX)], [R.ID_MUST_NOT_BE_INT_MAX]),
    Case("exists_with_different_flags: replay with another flag",
         [PLAIN._replace(flags=F.PENDING)], [R.EXISTS_WITH_DIFFERENT_FLAGS], setup=[[PLAIN]]),
    Case("exists_with_different_pending_id: replay with a pending id",
         [PLAIN._replace(pending_id=5)], [R.EXISTS_WITH_DIFFERENT_PENDING_ID], setup=[[PLAIN]]),
    Case("exists_with_different_timeout: replay with a timeout",
         [PLAIN._replace(timeout=1)], [R.EXISTS_WITH_DIFFERENT_TIMEOUT], setup=[[PLAIN]]),
    Case("exists_with_different_debit_account_id: replay from another account",
         [PLAIN._replace(debit_account_id=7)], [R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID],
         setup=[[PLAIN]]),
    Case("exists_with_different_credit_account_id: replay to another account",
         [PLAIN._replace(credit_account_id=7)], [R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID],
         setup=[[PLAIN]]),
    Case("exists_with_different_amount: replay with another amount",
         [PLAIN._replace(amount=11)], [R.EXISTS_WITH_DIFFERENT_AMOUNT], setup=[[PLAIN]]),
    Case("exists_with_different_user_data_128",
         [PLAIN._replace(user_data_128=9)], [R.EXISTS_WITH_DIFFERENT_USER_DATA_128],
         setup=[[PLAIN]]),
    Case("exists_with_different_user_data_64",
         [PLAIN._replace(user_data_64=9)], [R.EXISTS_WITH_DIFFERENT_USER_DATA_64],
         setup=[[PLAIN]]),
    Case("exists_with_different_user_data_32",
         [PLAIN._replace(user_data_32=9)], [R.EXISTS_WITH_DIFFERENT_USER_DATA_32],
         setup=[[PLAIN]]),
    Case("exists_with_different_ledger",
         [PLAIN._replace(ledger=2)], [R.EXISTS_WITH_DIFFERENT_LEDGER], setup=[[PLAIN]]),
    Case("exists_with_different_code",
         [PLAIN._replace(code=2)], [R.EXISTS_WITH_DIFFERENT_CODE], setup=[[PLAIN]]),
    Case("exists: an identical replay changes nothing", [PLAIN], [R.EXISTS], setup=[[PLAIN]]),
    Case("id_already_failed: an id that failed transiently can never succeed later",
         [tr(1)], [R.ID_ALREADY_FAILED], setup=[[tr(1, dr=UNKNOWN)]]),
    Case("flags_are_mutually_exclusive: post and void at once",
         [post(1, 100, flags=F.VOID_PENDING_TRANSFER)], [R.FLAGS_ARE_MUTUALLY_EXCLUSIVE],
         setup=[[PENDING]]),
    Case("debit_account_id_must_not_be_zero", [tr(1, dr=0)],
         [R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO]),
    Case("debit_account_id_must_not_be_int_max", [tr(1, dr=AMOUNT_MAX)],
         [R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX]),
    Case("credit_account_id_must_not_be_zero", [tr(1, cr=0)],
         [R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO]),
    Case("credit_account_id_must_not_be_int_max", [tr(1, cr=AMOUNT_MAX)],
         [R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_INT_MAX]),
    Case("accounts_must_be_different", [tr(1, dr=1, cr=1)], [R.ACCOUNTS_MUST_BE_DIFFERENT]),
    Case("pending_id_must_be_zero: only a post or void names a pending transfer",
         [tr(1, pending_id=100)], [R.PENDING_ID_MUST_BE_ZERO], setup=[[PENDING]]),
    Case("pending_id_must_not_be_zero: a post must name its pending transfer",
         [post(1, 0)], [R.PENDING_ID_MUST_NOT_BE_ZERO]),
    Case("pending_id_must_not_be_int_max", [void(1, AMOUNT_MAX)],
         [R.PENDING_ID_MUST_NOT_BE_INT_MAX]),
    Case("pending_id_must_be_different: a post cannot post itself", [post(1, 1)],
         [R.PENDING_ID_MUST_BE_DIFFERENT]),
    Case("timeout_reserved_for_pending_transfer: a plain transfer with a timeout",
         [tr(1, timeout=1)], [R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER]),
    Case("timeout_reserved_for_pending_transfer: a void with a timeout",
         [void(1, 100, timeout=1)], [R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER],
         setup=[[PENDING]]),
    Case("closing_transfer_must_be_pending", [tr(1, flags=F.CLOSING_DEBIT)],
         [R.CLOSING_TRANSFER_MUST_BE_PENDING]),
    Case("amount_must_not_be_zero: paycell rejects a plain transfer of nothing",
         [tr(1, amount=0)], [R.AMOUNT_MUST_NOT_BE_ZERO]),
    Case("amount_must_not_be_zero: paycell rejects a pending transfer of nothing",
         [pending(1, amount=0)], [R.AMOUNT_MUST_NOT_BE_ZERO]),
    Case("ledger_must_not_be_zero", [tr(1, ledger=0)], [R.LEDGER_MUST_NOT_BE_ZERO]),
    Case("code_must_not_be_zero", [tr(1, code=0)], [R.CODE_MUST_NOT_BE_ZERO]),
    Case("debit_account_not_found", [tr(1, dr=UNKNOWN)], [R.DEBIT_ACCOUNT_NOT_FOUND]),
    Case("credit_account_not_found", [tr(1, cr=UNKNOWN)], [R.CREDIT_ACCOUNT_NOT_FOUND]),
    Case("accounts_must_have_the_same_ledger", [tr(1, dr=1, cr=3)],
         [R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER]),
    Case("transfer_must_have_the_same_ledger_as_accounts", [tr(1, ledger=2)],
         [R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS]),
    Case("pending_transfer_not_found", [post(1, 100)], [R.PENDING_TRANSFER_NOT_FOUND]),
    Case("pending_transfer_not_found: a failed id is not a transfer",
         [post(1, 100)], [R.PENDING_TRANSFER_NOT_FOUND], setup=[[pending(100, dr=UNKNOWN)]]),
    Case("pending_transfer_not_pending: posting a plain transfer",
         [post(1, 101)], [R.PENDING_TRANSFER_NOT_PENDING], setup=[[PLAIN]]),
    Case("pending_transfer_has_different_debit_account_id",
         [post(1, 100, debit_account_id=7)], [R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID],
         setup=[[PENDING]]),
    Case("pending_transfer_has_different_credit_account_id",
         [post(1, 100, credit_account_id=7)], [R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID],
         setup=[[PENDING]]),
    Case("pending_transfer_has_different_ledger",
         [post(1, 100, ledger=2)], [R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER],
         setup=[[PENDING]]),
    Case("pending_transfer_has_different_code",
         [void(1, 100, code=2)], [R.PENDING_TRANSFER_HAS_DIFFERENT_CODE], setup=[[PENDING]]),
    Case("exceeds_pending_transfer_amount: posting more than was reserved",
         [post(1, 100, amount=11)], [R.EXCEEDS_PENDING_TRANSFER_AMOUNT], setup=[[PENDING]]),
    Case("pending_transfer_has_different_amount: a void must release all of it",
         [void(1, 100, amount=5)], [R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT],
         setup=[[PENDING]]),
    Case("pending_transfer_already_posted", [void(2, 100)], [R.PENDING_TRANSFER_ALREADY_POSTED],
         setup=[[PENDING], [post(1, 100)]]),
    Case("pending_transfer_already_voided", [post(2, 100)], [R.PENDING_TRANSFER_ALREADY_VOIDED],
         setup=[[PENDING], [void(1, 100)]]),
    Case("pending_transfer_expired: its timeout passed",
         [post(1, 100)], [R.PENDING_TRANSFER_EXPIRED],
         setup=[[pending(100, timeout=1)]], advance_ns=2 * SECOND),
    Case("debit_account_already_closed: a closing transfer closed the debit account",
         [tr(1)], [R.DEBIT_ACCOUNT_ALREADY_CLOSED],
         setup=[[pending(100, dr=1, cr=7, flags=F.CLOSING_DEBIT)]]),
    Case("credit_account_already_closed: a closing transfer closed the credit account",
         [tr(1)], [R.CREDIT_ACCOUNT_ALREADY_CLOSED],
         setup=[[pending(100, dr=7, cr=2, flags=F.CLOSING_CREDIT)]]),
    Case("overflows_debits_pending", [pending(1, dr=1, cr=6, amount=1)],
         [R.OVERFLOWS_DEBITS_PENDING], setup=[[pending(100, amount=AMOUNT_MAX)]]),
    Case("overflows_credits_pending", [pending(1, dr=6, cr=2, amount=1)],
         [R.OVERFLOWS_CREDITS_PENDING], setup=[[pending(100, amount=AMOUNT_MAX)]]),
    Case("overflows_debits_posted", [tr(1, dr=1, cr=6, amount=1)],
         [R.OVERFLOWS_DEBITS_POSTED], setup=[[tr(100, amount=AMOUNT_MAX)]]),
    Case("overflows_credits_posted", [tr(1, dr=6, cr=2, amount=1)],
         [R.OVERFLOWS_CREDITS_POSTED], setup=[[tr(100, amount=AMOUNT_MAX)]]),
    Case("overflows_debits: pending plus posted debits", [tr(1, dr=1, cr=6, amount=1)],
         [R.OVERFLOWS_DEBITS], setup=[[pending(100, amount=AMOUNT_MAX)]]),
    Case("overflows_credits: pending plus posted credits", [tr(1, dr=6, cr=2, amount=1)],
         [R.OVERFLOWS_CREDITS], setup=[[pending(100, amount=AMOUNT_MAX)]]),
    Case("overflows_timeout: the expiry would pass the largest timestamp",
         [pending(1, timeout=(1 << 32) - 1)], [R.OVERFLOWS_TIMEOUT],
         clock_start=5 * 10**18),
    Case("exceeds_credits: debits may not exceed credits", [tr(1, dr=4, cr=2)],
         [R.EXCEEDS_CREDITS]),
    Case("exceeds_debits: credits may not exceed debits", [tr(1, dr=1, cr=5)],
         [R.EXCEEDS_DEBITS]),
    # ------------------------------------------------------------------------- precedence
    Case("precedence: reserved_flag before id_must_not_be_zero",
         [tr(0, flags=1 << 12)], [R.RESERVED_FLAG]),
    Case("precedence: id_must_not_be_zero before ledger_must_not_be_zero",
         [tr(0, ledger=0)], [R.ID_MUST_NOT_BE_ZERO]),
    Case("precedence: chain_open before timestamp_must_be_zero",
         [tr(1, flags=F.LINKED, timestamp=5)], [R.LINKED_EVENT_CHAIN_OPEN]),
    Case("precedence: exists checks come before validation (ledger 0 on a replay)",
         [PLAIN._replace(ledger=0)], [R.EXISTS_WITH_DIFFERENT_LEDGER], setup=[[PLAIN]]),
    Case("precedence: exists before validation (debit account 0 on a replay)",
         [PLAIN._replace(debit_account_id=0)], [R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID],
         setup=[[PLAIN]]),
    Case("precedence: exists before closed accounts and limits",
         [PLAIN], [R.EXISTS],
         setup=[[PLAIN], [pending(100, dr=1, cr=2, flags=F.CLOSING_DEBIT | F.CLOSING_CREDIT)]]),
    Case("precedence: exists_with_different_flags before the other fields",
         [PLAIN._replace(flags=F.PENDING, amount=99, code=9)],
         [R.EXISTS_WITH_DIFFERENT_FLAGS], setup=[[PLAIN]]),
    Case("precedence: id_already_failed before validation",
         [tr(1, ledger=0)], [R.ID_ALREADY_FAILED], setup=[[tr(1, cr=UNKNOWN)]]),
    Case("precedence: id_already_failed even later in the same batch",
         [tr(1, dr=UNKNOWN), tr(1)], [R.DEBIT_ACCOUNT_NOT_FOUND, R.ID_ALREADY_FAILED]),
    Case("precedence: flags_are_mutually_exclusive before pending_id_must_not_be_zero",
         [post(1, 0, flags=F.PENDING)], [R.FLAGS_ARE_MUTUALLY_EXCLUSIVE]),
    Case("precedence: a post may not be balancing or closing",
         [post(1, 100, flags=F.CLOSING_CREDIT)], [R.FLAGS_ARE_MUTUALLY_EXCLUSIVE],
         setup=[[PENDING]]),
    Case("precedence: debit account id checks before credit account id checks",
         [tr(1, dr=0, cr=0)], [R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO]),
    Case("precedence: closing_transfer_must_be_pending before amount_must_not_be_zero",
         [tr(1, amount=0, flags=F.CLOSING_CREDIT)], [R.CLOSING_TRANSFER_MUST_BE_PENDING]),
    Case("precedence: amount_must_not_be_zero before ledger_must_not_be_zero",
         [tr(1, amount=0, ledger=0)], [R.AMOUNT_MUST_NOT_BE_ZERO]),
    Case("a balancing transfer of amount 0 is allowed and moves nothing",
         [tr(1, amount=0, flags=F.BALANCING_DEBIT)], [R.OK]),
    Case("precedence: debit_account_not_found before credit_account_not_found",
         [tr(1, dr=UNKNOWN, cr=UNKNOWN + 1)], [R.DEBIT_ACCOUNT_NOT_FOUND]),
    Case("precedence: accounts_must_have_the_same_ledger before the transfer's ledger",
         [tr(1, dr=1, cr=3, ledger=5)], [R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER]),
    Case("precedence: a closed account before limits",
         [tr(1, dr=4, cr=2)], [R.DEBIT_ACCOUNT_ALREADY_CLOSED],
         setup=[[tr(50, dr=1, cr=4, amount=5)],
                [pending(100, dr=4, cr=1, amount=1, flags=F.CLOSING_DEBIT)]]),
    Case("precedence: overflow before limits",
         [tr(1, dr=6, cr=5, amount=1)], [R.OVERFLOWS_CREDITS_POSTED],
         setup=[[tr(100, dr=5, cr=1, amount=AMOUNT_MAX)],
                [tr(101, dr=2, cr=5, amount=AMOUNT_MAX)]]),
    Case("precedence: pending_transfer_not_pending before the account id checks",
         [post(1, 101, debit_account_id=7)], [R.PENDING_TRANSFER_NOT_PENDING], setup=[[PLAIN]]),
    Case("precedence: exceeds_pending_transfer_amount before already_posted",
         [post(2, 100, amount=11)], [R.EXCEEDS_PENDING_TRANSFER_AMOUNT],
         setup=[[PENDING], [post(1, 100)]]),
    Case("precedence: pending_transfer_has_different_amount before already_voided",
         [void(2, 100, amount=5)], [R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT],
         setup=[[PENDING], [void(1, 100)]]),
    Case("precedence: exceeds_pending_transfer_amount before expired",
         [post(1, 100, amount=11)], [R.EXCEEDS_PENDING_TRANSFER_AMOUNT],
         setup=[[pending(100, timeout=1)]], advance_ns=2 * SECOND),
    Case("precedence: already_posted before a closed account",
         [post(2, 100)], [R.PENDING_TRANSFER_ALREADY_POSTED],
         setup=[[PENDING], [post(1, 100)], [pending(200, dr=1, cr=7, flags=F.CLOSING_DEBIT)]]),
    # --------------------------------------------------------------- semantics worth pinning
    Case("a post of a closing pending transfer is rejected: its account is closed",
         [post(1, 100)], [R.DEBIT_ACCOUNT_ALREADY_CLOSED],
         setup=[[pending(100, flags=F.CLOSING_DEBIT)]]),
    Case("a void may touch a closed account, and reopens it",
         [void(1, 100), tr(2)], [R.OK, R.OK],
         setup=[[pending(100, flags=F.CLOSING_DEBIT)]]),
    Case("a post of amount 0 is a valid post of nothing",
         [post(1, 100, amount=0), void(2, 100)], [R.OK, R.PENDING_TRANSFER_ALREADY_POSTED],
         setup=[[PENDING]]),
    Case("a replayed full post (MAX) is exists", [post(1, 100)], [R.EXISTS],
         setup=[[PENDING], [post(1, 100)]]),
    Case("a replayed full post may name the exact amount instead of MAX",
         [post(1, 100, amount=10)], [R.EXISTS], setup=[[PENDING], [post(1, 100)]]),
    Case("a replayed full post with an amount between the pending amount and MAX differs",
         [post(1, 100, amount=11)], [R.EXISTS_WITH_DIFFERENT_AMOUNT],
         setup=[[PENDING], [post(1, 100)]]),
    Case("a replayed partial post must name the same amount",
         [post(1, 100, amount=4)], [R.EXISTS_WITH_DIFFERENT_AMOUNT],
         setup=[[PENDING], [post(1, 100, amount=3)]]),
    Case("a replayed void may send amount 0 or the pending amount",
         [void(1, 100), void(1, 100, amount=10)], [R.EXISTS, R.EXISTS],
         setup=[[PENDING], [void(1, 100)]]),
    Case("a replayed post with other user data differs from the inherited one",
         [post(1, 100, user_data_64=99)], [R.EXISTS_WITH_DIFFERENT_USER_DATA_64],
         setup=[[PENDING], [post(1, 100)]]),
    Case("a replayed balancing transfer with a larger bound is exists",
         [tr(1, dr=4, cr=2, amount=AMOUNT_MAX, flags=F.BALANCING_DEBIT)], [R.EXISTS],
         setup=[[tr(50, dr=1, cr=4, amount=5)],
                [tr(1, dr=4, cr=2, amount=1000, flags=F.BALANCING_DEBIT)]]),
    Case("a replayed balancing transfer with a bound below the amount moved differs",
         [tr(1, dr=4, cr=2, amount=4, flags=F.BALANCING_DEBIT)],
         [R.EXISTS_WITH_DIFFERENT_AMOUNT],
         setup=[[tr(50, dr=1, cr=4, amount=5)],
                [tr(1, dr=4, cr=2, amount=1000, flags=F.BALANCING_DEBIT)]]),
    Case("an exists inside a chain breaks the chain",
         [tr(1, flags=F.LINKED), PLAIN, tr(2)],
         [R.LINKED_EVENT_FAILED, R.EXISTS, R.OK], setup=[[PLAIN]]),
    Case("events after a broken chain's failure are not run; the next chain runs",
         [tr(1, flags=F.LINKED), tr(2, dr=0, flags=F.LINKED), tr(3), tr(4)],
         [R.LINKED_EVENT_FAILED, R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO, R.LINKED_EVENT_FAILED,
          R.OK]),
    Case("a chain that closes on a linked last event fails entirely",
         [tr(1, flags=F.LINKED), tr(2, flags=F.LINKED)],
         [R.LINKED_EVENT_FAILED, R.LINKED_EVENT_CHAIN_OPEN]),
    Case("a chain's members see each other's effects",
         [tr(1, dr=1, cr=4, amount=5, flags=F.LINKED), tr(2, dr=4, cr=2, amount=5)],
         [R.OK, R.OK]),
    Case("a broken chain's transient failure is still remembered",
         [tr(1, flags=F.LINKED), tr(2, dr=4, cr=2), tr(2)],
         [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS, R.ID_ALREADY_FAILED]),
    Case("a rolled-back chain member's id is not remembered as failed",
         [tr(1, flags=F.LINKED), tr(2, dr=4, cr=2), tr(1)],
         [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS, R.OK]),
    # The pending transfer is created at START + TICK; it expires at START + TICK + 1 s. The
    # events' batch starts at START + 2 TICK + advance_ns, one nanosecond per event.
    Case("pending_transfer_expired: by time, at the very nanosecond of its expiry",
         [tr(5), tr(6), post(1, 100)], [R.OK, R.OK, R.PENDING_TRANSFER_EXPIRED],
         setup=[[pending(100, timeout=1)]], advance_ns=SECOND - 2 - TICK_NS),
    Case("a post one nanosecond before the expiry succeeds",
         [tr(5), post(1, 100)], [R.OK, R.OK],
         setup=[[pending(100, timeout=1)]], advance_ns=SECOND - 2 - TICK_NS),
    Case("an expired closing transfer reopens its account",
         [tr(1)], [R.OK],
         setup=[[pending(100, timeout=1, flags=F.CLOSING_DEBIT)]], advance_ns=2 * SECOND),
    Case("an expired pending transfer cannot be voided either",
         [void(1, 100)], [R.PENDING_TRANSFER_EXPIRED],
         setup=[[pending(100, timeout=1)]], advance_ns=SECOND),
]

ACCOUNT_CASES = [
    AccountCase("ok", [Account(id=10, ledger=1, code=1)], [A.OK]),
    AccountCase("linked_event_failed: a chain member is rolled back when a later one fails",
                [Account(id=10, ledger=1, code=1, flags=AF.LINKED),
                 Account(id=11, ledger=0, code=1)],
                [A.LINKED_EVENT_FAILED, A.LEDGER_MUST_NOT_BE_ZERO]),
    AccountCase("linked_event_chain_open",
                [Account(id=10, ledger=1, code=1, flags=AF.LINKED)], [A.LINKED_EVENT_CHAIN_OPEN]),
    AccountCase("timestamp_must_be_zero", [Account(id=10, ledger=1, code=1, timestamp=1)],
                [A.TIMESTAMP_MUST_BE_ZERO]),
    AccountCase("reserved_field", [Account(id=10, ledger=1, code=1, reserved=1)],
                [A.RESERVED_FIELD]),
    AccountCase("reserved_flag: a padding flag bit", [Account(id=10, ledger=1, code=1,
                                                              flags=1 << 6)], [A.RESERVED_FLAG]),
    AccountCase("reserved_flag: the imported flag is reserved in paycell",
                [Account(id=10, ledger=1, code=1, flags=AF.IMPORTED)], [A.RESERVED_FLAG]),
    AccountCase("id_must_not_be_zero", [Account(id=0, ledger=1, code=1)],
                [A.ID_MUST_NOT_BE_ZERO]),
    AccountCase("id_must_not_be_int_max", [Account(id=AMOUNT_MAX, ledger=1, code=1)],
                [A.ID_MUST_NOT_BE_INT_MAX]),
    AccountCase("exists_with_different_flags",
                [BASE_ACCOUNTS[0]._replace(flags=AF.HISTORY)], [A.EXISTS_WITH_DIFFERENT_FLAGS]),
    AccountCase("exists_with_different_user_data_128",
                [BASE_ACCOUNTS[6]._replace(user_data_128=1)],
                [A.EXISTS_WITH_DIFFERENT_USER_DATA_128]),
    AccountCase("exists_with_different_user_data_64",
                [BASE_ACCOUNTS[6]._replace(user_data_64=1)],
                [A.EXISTS_WITH_DIFFERENT_USER_DATA_64]),
    AccountCase("exists_with_different_user_data_32",
                [BASE_ACCOUNTS[6]._replace(user_data_32=1)],
                [A.EXISTS_WITH_DIFFERENT_USER_DATA_32]),
    AccountCase("exists_with_different_ledger", [BASE_ACCOUNTS[0]._replace(ledger=2)],
                [A.EXISTS_WITH_DIFFERENT_LEDGER]),
    AccountCase("exists_with_different_code", [BASE_ACCOUNTS[0]._replace(code=2)],
                [A.EXISTS_WITH_DIFFERENT_CODE]),
    AccountCase("exists", [BASE_ACCOUNTS[6]], [A.EXISTS]),
    AccountCase("flags_are_mutually_exclusive",
                [Account(id=10, ledger=1, code=1, flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS
                         | AF.CREDITS_MUST_NOT_EXCEED_DEBITS)],
                [A.FLAGS_ARE_MUTUALLY_EXCLUSIVE]),
    AccountCase("debits_pending_must_be_zero",
                [Account(id=10, ledger=1, code=1, debits_pending=1)],
                [A.DEBITS_PENDING_MUST_BE_ZERO]),
    AccountCase("debits_posted_must_be_zero",
                [Account(id=10, ledger=1, code=1, debits_posted=1)],
                [A.DEBITS_POSTED_MUST_BE_ZERO]),
    AccountCase("credits_pending_must_be_zero",
                [Account(id=10, ledger=1, code=1, credits_pending=1)],
                [A.CREDITS_PENDING_MUST_BE_ZERO]),
    AccountCase("credits_posted_must_be_zero",
                [Account(id=10, ledger=1, code=1, credits_posted=1)],
                [A.CREDITS_POSTED_MUST_BE_ZERO]),
    AccountCase("ledger_must_not_be_zero", [Account(id=10, ledger=0, code=1)],
                [A.LEDGER_MUST_NOT_BE_ZERO]),
    AccountCase("code_must_not_be_zero", [Account(id=10, ledger=1, code=0)],
                [A.CODE_MUST_NOT_BE_ZERO]),
    # ------------------------------------------------------------------------- precedence
    AccountCase("precedence: reserved_field before reserved_flag before id_must_not_be_zero",
                [Account(id=0, reserved=1, flags=1 << 7)], [A.RESERVED_FIELD]),
    AccountCase("precedence: reserved_flag before id_must_not_be_zero",
                [Account(id=0, flags=1 << 7)], [A.RESERVED_FLAG]),
    AccountCase("precedence: id_must_not_be_zero before ledger_must_not_be_zero",
                [Account(id=0, ledger=0, code=1)], [A.ID_MUST_NOT_BE_ZERO]),
    AccountCase("precedence: exists checks come before validation (ledger 0 on a replay)",
                [BASE_ACCOUNTS[0]._replace(ledger=0)], [A.EXISTS_WITH_DIFFERENT_LEDGER]),
    AccountCase("precedence: exists before balances must be zero",
                [BASE_ACCOUNTS[0]._replace(debits_posted=5)], [A.EXISTS]),
    AccountCase("precedence: flags_are_mutually_exclusive before balances must be zero",
                [Account(id=10, ledger=0, code=0, debits_pending=1,
                         flags=AF.DEBITS_MUST_NOT_EXCEED_CREDITS
                         | AF.CREDITS_MUST_NOT_EXCEED_DEBITS)],
                [A.FLAGS_ARE_MUTUALLY_EXCLUSIVE]),
    AccountCase("precedence: ledger_must_not_be_zero before code_must_not_be_zero",
                [Account(id=10, ledger=0, code=0)], [A.LEDGER_MUST_NOT_BE_ZERO]),
    AccountCase("an account created earlier in the same batch exists",
                [Account(id=10, ledger=1, code=1), Account(id=10, ledger=1, code=2)],
                [A.OK, A.EXISTS_WITH_DIFFERENT_CODE]),
    AccountCase("a rolled-back account does not exist",
                [Account(id=10, ledger=1, code=1, flags=AF.LINKED), Account(id=0),
                 Account(id=10, ledger=1, code=1)],
                [A.LINKED_EVENT_FAILED, A.ID_MUST_NOT_BE_ZERO, A.OK]),
]
# fmt: on

# Results no row can produce, with the reason. Every declared result is reachable: the only
# unreachable TigerBeetle results (imported_*) are not declared in paycell at all.
UNREACHABLE_TRANSFER_RESULTS: dict[CreateTransferResult, str] = {}
UNREACHABLE_ACCOUNT_RESULTS: dict[CreateAccountResult, str] = {}


def _setup_ledger(clock: Clock) -> tuple[Ledger, ReferenceLedger]:
    ledger = Ledger(":memory:", clock=clock)
    model = ReferenceLedger()
    results = ledger.create_accounts(BASE_ACCOUNTS)
    assert results == [A.OK] * len(BASE_ACCOUNTS)
    assert model.create_accounts(BASE_ACCOUNTS, clock.now) == ["ok"] * len(BASE_ACCOUNTS)
    return ledger, model


def _event_ids(events: Sequence[Transfer]) -> list[int]:
    return [t.id for t in events]


def _snapshot(ledger: Ledger, transfer_ids: list[int]) -> tuple[list[Account], list[Transfer]]:
    return ledger.lookup_accounts(ACCOUNT_IDS), ledger.lookup_transfers(transfer_ids)


def _ids(cases: Sequence[Case] | Sequence[AccountCase]) -> Iterator[str]:
    return (case.id for case in cases)


@pytest.mark.parametrize("case", TRANSFER_CASES, ids=list(_ids(TRANSFER_CASES)))
def test_create_transfers_result(case: Case) -> None:
    clock = Clock(case.clock_start)
    ledger, model = _setup_ledger(clock)
    with ledger:
        for batch in case.setup:
            clock.now += TICK_NS
            setup_results = [r.value for r in ledger.create_transfers(batch)]
            assert setup_results == model.create_transfers(batch, clock.now)
        clock.now += TICK_NS + case.advance_ns
        before = _snapshot(ledger, _event_ids(case.events))
        model.lookup_accounts(ACCOUNT_IDS, clock.now)

        results = ledger.create_transfers(case.events)

        assert results == list(case.expected)
        assert [r.value for r in results] == model.create_transfers(case.events, clock.now)
        after = _snapshot(ledger, _event_ids(case.events))
        if all(r is not R.OK for r in results):
            assert after == before, "a rejected batch must change nothing"
        assert after[0] == model.lookup_accounts(ACCOUNT_IDS, clock.now)
        assert after[1] == model.lookup_transfers(_event_ids(case.events))
        assert ledger.verify().ok


@pytest.mark.parametrize("case", ACCOUNT_CASES, ids=list(_ids(ACCOUNT_CASES)))
def test_create_accounts_result(case: AccountCase) -> None:
    clock = Clock()
    ledger, model = _setup_ledger(clock)
    with ledger:
        # Give the existing accounts balances, so "nothing changed" means something.
        clock.now += TICK_NS
        funding = [tr(900, dr=1, cr=2, amount=3), pending(901, dr=2, cr=6, amount=2)]
        assert ledger.create_transfers(funding) == [R.OK, R.OK]
        model.create_transfers(funding, clock.now)
        clock.now += TICK_NS
        new_ids = [a.id for a in case.events]
        before = ledger.lookup_accounts(ACCOUNT_IDS + new_ids)

        results = ledger.create_accounts(case.events)

        assert results == list(case.expected)
        assert [r.value for r in results] == model.create_accounts(case.events, clock.now)
        after = ledger.lookup_accounts(ACCOUNT_IDS + new_ids)
        if all(r is not A.OK for r in results):
            assert after == before, "a rejected batch must change nothing"
        assert after == model.lookup_accounts(ACCOUNT_IDS + new_ids, clock.now)
        assert ledger.verify().ok


def test_every_transfer_result_has_a_row() -> None:
    covered = {case.expected[-1] for case in TRANSFER_CASES} | {
        r for case in TRANSFER_CASES for r in case.expected
    }
    missing = set(R) - covered - set(UNREACHABLE_TRANSFER_RESULTS)
    assert not missing, f"results without a row: {sorted(r.value for r in missing)}"


def test_every_account_result_has_a_row() -> None:
    covered = {r for case in ACCOUNT_CASES for r in case.expected}
    missing = set(A) - covered - set(UNREACHABLE_ACCOUNT_RESULTS)
    assert not missing, f"results without a row: {sorted(r.value for r in missing)}"


def test_each_row_named_after_a_code_expects_that_code() -> None:
    for case in TRANSFER_CASES:
        name = case.id.split(":")[0]
        if name in {r.value for r in R}:
            assert name in {r.value for r in case.expected}, case.id
    for account_case in ACCOUNT_CASES:
        name = account_case.id.split(":")[0]
        if name in {r.value for r in A}:
            assert name in {r.value for r in account_case.expected}, account_case.id


def test_imported_results_do_not_exist_in_paycell() -> None:
    """TigerBeetle's imported_* results are unreachable by design: the imported flag bit is
    reserved (see the reserved_flag rows), so the results are not even declared."""
    assert not [r for r in R if "imported" in r.value]
    assert not [r for r in A if "imported" in r.value]
