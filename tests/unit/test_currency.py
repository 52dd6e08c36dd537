"""Currencies and exact decimal conversion: no amount is ever rounded on the way in."""

import pytest

from paycell import (
    InvalidAmountError,
    UnknownCurrencyError,
    currency_for_code,
    currency_for_ledger,
    format_amount,
    parse_amount,
)


@pytest.mark.parametrize(
    ("code", "ledger", "exponent"),
    [("CNY", 156, 2), ("USD", 840, 2), ("JPY", 392, 0), ("KWD", 414, 3), ("EUR", 978, 2)],
)
def test_ledger_number_is_the_iso_4217_numeric_code(code: str, ledger: int, exponent: int) -> None:
    currency = currency_for_code(code)
    assert (currency.ledger, currency.exponent) == (ledger, exponent)
    assert currency_for_ledger(ledger) is currency


@pytest.mark.parametrize(
    ("text", "code", "minor_units"),
    [
        ("12.34", "CNY", 1234),
        ("0.01", "CNY", 1),
        ("100", "CNY", 10000),
        ("100.5", "CNY", 10050),
        ("1000", "JPY", 1000),
        ("1.234", "KWD", 1234),
        ("0", "USD", 0),
        ("3402823669209384634633746074317682114.55", "CNY", (1 << 128) - 1),
    ],
)
def test_parse_amount_converts_exactly_to_minor_units(
    text: str, code: str, minor_units: int
) -> None:
    assert parse_amount(text, currency_for_code(code)) == minor_units


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("12.345", "CNY"),
        ("1.5", "JPY"),
        ("-1.00", "CNY"),
        ("+1.00", "CNY"),
        ("1e3", "CNY"),
        ("", "CNY"),
        (" 1.00", "CNY"),
        ("1.", "CNY"),
        (".5", "CNY"),
        ("1.2.3", "CNY"),
        ("NaN", "CNY"),
        ("Infinity", "CNY"),
        ("一", "CNY"),
        ("١٢", "CNY"),
    ],
)
def test_parse_amount_rejects_anything_it_would_have_to_round_or_guess(
    text: str, code: str
) -> None:
    with pytest.raises(InvalidAmountError):
        parse_amount(text, currency_for_code(code))


def test_format_amount_round_trips_parse_amount() -> None:
    cny = currency_for_code("CNY")
    for minor_units in [0, 1, 99, 100, 1234, 10**20 + 7]:
        assert parse_amount(format_amount(minor_units, cny), cny) == minor_units
    assert format_amount(1234, currency_for_code("KWD")) == "1.234"
    assert format_amount(1234, currency_for_code("JPY")) == "1234"


def test_unknown_currencies_are_rejected_by_name() -> None:
    with pytest.raises(UnknownCurrencyError, match="XYZ"):
        currency_for_code("XYZ")
    with pytest.raises(UnknownCurrencyError, match="999"):
        currency_for_ledger(999)
