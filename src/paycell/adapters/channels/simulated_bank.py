"""A simulated bank channel with the interface a real one has.

A real bank takes an instruction (credit this account, debit that card), answers later with
an asynchronous, signed callback, and publishes a daily statement file. The simulation does
the same on one machine: `initiate` queues an instruction, `deliver_callbacks` sends the
answers (optionally twice, late, or out of order, as real banks do), and `statement_csv`
writes the day's file. Callbacks carry an HMAC-SHA256 signature over their body, which the
platform's channel endpoint verifies before trusting them.

Outcomes are decided by a rule: by default every instruction succeeds except amounts whose
minor units end in 13 ("declined by the bank"), so tests and the demo can produce failures
deterministically.
"""

import csv
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from paycell.core.payments.records import ChannelRequest, ChannelRequestKind

NANOSECONDS_PER_DAY: Final = 86_400 * 1_000_000_000


def declines_amounts_ending_in_13(request: ChannelRequest) -> bool:
    return request.amount % 100 != 13


@dataclass(frozen=True, slots=True)
class Callback:
    """The bank's answer, as it travels: a JSON body and its signature."""

    body: str
    signature: str


@dataclass(slots=True)
class _Instruction:
    request: ChannelRequest
    succeeded: bool
    answered_at: int = 0


@dataclass(slots=True)
class SimulatedBank:
    number: int = 1
    # The callback signing key. A fresh random one per bank unless given: a fixed default
    # would let anyone who read this file forge callbacks and decide top-ups and withdrawals.
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    decide: Callable[[ChannelRequest], bool] = declines_amounts_ending_in_13
    _queue: list[_Instruction] = field(default_factory=list)
    _answered: list[_Instruction] = field(default_factory=list)

    def initiate(self, request: ChannelRequest) -> None:
        """Accept an instruction; its answer comes with the next `deliver_callbacks`."""
        self._queue.append(_Instruction(request, self.decide(request)))

    @property
    def pending_instructions(self) -> int:
        return len(self._queue)

    def sign(self, body: str) -> str:
        return hmac.new(self.secret.encode(), body.encode(), hashlib.sha256).hexdigest()

    def verify(self, callback: Callback) -> bool:
        return hmac.compare_digest(self.sign(callback.body), callback.signature)

    def callbacks(self, now: int) -> list[Callback]:
        """Answer every queued instruction (in the order given), marking them answered."""
        answers: list[Callback] = []
        for instruction in self._queue:
            instruction.answered_at = now
            body = json.dumps(
                {
                    "channel_reference": instruction.request.channel_reference,
                    "status": "SUCCESS" if instruction.succeeded else "FAILED",
                    "amount": instruction.request.amount,
                    "reason": "" if instruction.succeeded else "declined by the bank",
                },
                sort_keys=True,
            )
            answers.append(Callback(body, self.sign(body)))
        self._answered.extend(self._queue)
        self._queue = []
        return answers

    def statement_csv(self, day_start: int) -> str:
        """The day's statement: every instruction answered that day that moved money."""
        output = io.StringIO()
        writer = csv.writer(output)
        writer.writerow(["channel_reference", "kind", "direction", "amount", "ledger", "status"])
        for instruction in self._answered:
            if not day_start <= instruction.answered_at < day_start + NANOSECONDS_PER_DAY:
                continue
            request = instruction.request
            direction = "in" if request.kind is ChannelRequestKind.TOP_UP else "out"
            writer.writerow(
                [
                    request.channel_reference,
                    request.kind.value,
                    direction,
                    request.amount,
                    request.ledger,
                    "SUCCESS" if instruction.succeeded else "FAILED",
                ]
            )
        return output.getvalue()


def parse_callback(body: str) -> tuple[str, bool, int, str]:
    """(channel_reference, succeeded, amount, reason) from a verified callback body.

    Raises ValueError on anything malformed: a channel must never guess.
    """
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("callback body is not an object")
    reference = data.get("channel_reference")
    status = data.get("status")
    amount = data.get("amount")
    if not isinstance(reference, str) or status not in ("SUCCESS", "FAILED"):
        raise ValueError("callback needs channel_reference and status SUCCESS or FAILED")
    if type(amount) is not int or amount <= 0:
        raise ValueError("callback amount must be a positive integer")
    reason = data.get("reason", "")
    return reference, status == "SUCCESS", amount, str(reason)
