"""How the ledger service knows a batch's ids are new without looking them up: one read of
the highest stored id per range of ids (ids sharing their top byte) the batch uses."""

from typing import Any

from paycell.core.types import Transfer
from paycell.service.ledger_service import _all_ids_new


class HighestIds:
    """Answers `highest_transfer_id(below)` from a set of stored ids, recording each bound."""

    def __init__(self, *stored: int) -> None:
        self.stored = stored
        self.bounds: list[int | None] = []

    def highest_transfer_id(self, below: int | None = None) -> int:
        self.bounds.append(below)
        return max((i for i in self.stored if below is None or i < below), default=0)


def batch(*ids: int) -> list[Transfer]:
    return [Transfer(i, 1, 2, 1, ledger=156, code=1) for i in ids]


def new(unit: Any, *ids: int) -> bool:
    return _all_ids_new(unit, batch(*ids))


def test_each_range_is_checked_against_its_own_highest_id() -> None:
    payments, fees = 4 << 120, 5 << 120
    unit = HighestIds(payments + 10, fees + 10)
    assert new(unit, payments + 11, fees + 11, payments + 12)
    assert sorted(b for b in unit.bounds if b is not None) == [fees, 6 << 120]  # one read a range
    assert not new(unit, payments + 11, fees + 10)  # a fee id already stored
    assert not new(unit, payments + 10, fees + 11)  # a payment id already stored


def test_one_range_is_one_read_to_its_end() -> None:
    unit = HighestIds(7)
    assert new(unit, 8, 9, 10)
    assert unit.bounds == [1 << 120]
    assert not new(unit, 9, 7)


def test_the_last_range_has_no_end() -> None:
    unit = HighestIds((255 << 120) + 5)
    assert new(unit, (255 << 120) + 6)
    assert unit.bounds == [None]
    assert not new(unit, (255 << 120) + 5)
