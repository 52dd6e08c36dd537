"""The simulated bank behaves like a real channel: signed asynchronous answers, a statement."""

from paycell.adapters.channels.simulated_bank import Callback, SimulatedBank, parse_callback
from paycell.core.payments.records import (
    ChannelRequest,
    ChannelRequestKind,
    ChannelRequestStatus,
    PartyKind,
)

DAY = 86_400 * 1_000_000_000


def request(number: int, amount: int, kind: ChannelRequestKind) -> ChannelRequest:
    return ChannelRequest(
        id=number,
        kind=kind,
        party_kind=PartyKind.USER,
        party_id=7,
        ledger=156,
        amount=amount,
        status=ChannelRequestStatus.PENDING,
        request_no=f"r{number}",
        channel_reference=f"PC01{number:014d}",
        created_at=1,
    )


def test_instructions_are_answered_later_with_signed_callbacks() -> None:
    bank = SimulatedBank()
    bank.initiate(request(1, 100_00, ChannelRequestKind.TOP_UP))
    bank.initiate(request(2, 10_13, ChannelRequestKind.WITHDRAWAL))
    assert bank.pending_instructions == 2
    answers = bank.callbacks(now=5 * DAY + 10)
    assert bank.pending_instructions == 0
    assert all(bank.verify(answer) for answer in answers)
    parsed = [parse_callback(answer.body) for answer in answers]
    assert parsed == [
        ("PC0100000000000001", True, 100_00, ""),
        ("PC0100000000000002", False, 10_13, "declined by the bank"),
    ]
    assert bank.callbacks(now=5 * DAY + 20) == []


def test_a_forged_or_altered_callback_does_not_verify() -> None:
    bank = SimulatedBank()
    bank.initiate(request(1, 100_00, ChannelRequestKind.TOP_UP))
    (answer,) = bank.callbacks(now=1)
    assert not bank.verify(Callback(answer.body.replace("10000", "99999"), answer.signature))
    assert not SimulatedBank(secret="another").verify(answer)


def test_daily_statement_lists_the_days_answers() -> None:
    bank = SimulatedBank()
    bank.initiate(request(1, 100_00, ChannelRequestKind.TOP_UP))
    bank.callbacks(now=5 * DAY + 10)
    bank.initiate(request(2, 20_00, ChannelRequestKind.WITHDRAWAL))
    bank.callbacks(now=6 * DAY + 10)
    assert bank.statement_csv(5 * DAY).splitlines() == [
        "channel_reference,kind,direction,amount,ledger,status",
        "PC0100000000000001,top_up,in,10000,156,SUCCESS",
    ]
    assert bank.statement_csv(6 * DAY).splitlines()[1] == (
        "PC0100000000000002,withdrawal,out,2000,156,SUCCESS"
    )


def test_every_bank_signs_with_its_own_random_secret() -> None:
    first, second = SimulatedBank(), SimulatedBank()
    assert first.secret != second.secret
    assert len(first.secret) >= 64
    first.initiate(request(1, 100_00, ChannelRequestKind.TOP_UP))
    (answer,) = first.callbacks(now=1)
    assert first.verify(answer)
    assert not second.verify(answer)
