"""Currencies: one ledger per currency, identified by its ISO 4217 numeric code.

Money is always an integer count of a currency's minor unit. The exponent says how many
decimal places separate the minor unit from the major one (CNY 2: 1.00 CNY is 100 fen; JPY 0;
KWD 3). Conversions between decimal strings and minor units are exact: a string with more
decimal places than the currency allows is rejected, never rounded.

Using the ISO numeric code as the ledger number means a ledger number is meaningful on its own
(ledger 156 is CNY everywhere) and needs no registry to interpret.
"""

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    ledger: int
    exponent: int
    name: str


# ISO 4217 (the currencies a payment platform is likely to meet). Exponents follow the standard.
_CURRENCY_ROWS: Final = (
    ("AED", 784, 2, "UAE Dirham"),
    ("ARS", 32, 2, "Argentine Peso"),
    ("AUD", 36, 2, "Australian Dollar"),
    ("BHD", 48, 3, "Bahraini Dinar"),
    ("BRL", 986, 2, "Brazilian Real"),
    ("CAD", 124, 2, "Canadian Dollar"),
    ("CHF", 756, 2, "Swiss Franc"),
    ("CLP", 152, 0, "Chilean Peso"),
    ("CNY", 156, 2, "Yuan Renminbi"),
    ("CZK", 203, 2, "Czech Koruna"),
    ("DKK", 208, 2, "Danish Krone"),
    ("EGP", 818, 2, "Egyptian Pound"),
    ("EUR", 978, 2, "Euro"),
    ("GBP", 826, 2, "Pound Sterling"),
    ("HKD", 344, 2, "Hong Kong Dollar"),
    ("HUF", 348, 2, "Forint"),
    ("IDR", 360, 2, "Rupiah"),
    ("ILS", 376, 2, "New Israeli Sheqel"),
    ("INR", 356, 2, "Indian Rupee"),
    ("IQD", 368, 3, "Iraqi Dinar"),
    ("ISK", 352, 0, "Iceland Krona"),
    ("JOD", 400, 3, "Jordanian Dinar"),
    ("JPY", 392, 0, "Yen"),
    ("KRW", 410, 0, "Won"),
    ("KWD", 414, 3, "Kuwaiti Dinar"),
    ("LYD", 434, 3, "Libyan Dinar"),
    ("MOP", 446, 2, "Pataca"),
    ("MXN", 484, 2, "Mexican Peso"),
    ("MYR", 458, 2, "Malaysian Ringgit"),
    ("NOK", 578, 2, "Norwegian Krone"),
    ("NZD", 554, 2, "New Zealand Dollar"),
    ("OMR", 512, 3, "Rial Omani"),
    ("PHP", 608, 2, "Philippine Peso"),
    ("PLN", 985, 2, "Zloty"),
    ("RUB", 643, 2, "Russian Ruble"),
    ("SAR", 682, 2, "Saudi Riyal"),
    ("SEK", 752, 2, "Swedish Krona"),
    ("SGD", 702, 2, "Singapore Dollar"),
    ("THB", 764, 2, "Baht"),
    ("TND", 788, 3, "Tunisian Dinar"),
    ("TRY", 949, 2, "Turkish Lira"),
    ("TWD", 901, 2, "New Taiwan Dollar"),
    ("UGX", 800, 0, "Uganda Shilling"),
    ("USD", 840, 2, "US Dollar"),
    ("VND", 704, 0, "Dong"),
    ("XAF", 950, 0, "CFA Franc BEAC"),
    ("XOF", 952, 0, "CFA Franc BCEAO"),
    ("ZAR", 710, 2, "Rand"),
)

CURRENCIES_BY_CODE: Final[dict[str, Currency]] = {
    code: Currency(code, ledger, exponent, name) for code, ledger, exponent, name in _CURRENCY_ROWS
}
CURRENCIES_BY_LEDGER: Final[dict[int, Currency]] = {
    currency.ledger: currency for currency in CURRENCIES_BY_CODE.values()
}


class UnknownCurrencyError(ValueError):
    """The currency code or ledger number is not in paycell's ISO 4217 table."""


class InvalidAmountError(ValueError):
    """A decimal amount string is malformed, negative, or finer than the currency's minor unit."""


def currency_for_code(code: str) -> Currency:
    try:
        return CURRENCIES_BY_CODE[code.upper()]
    except KeyError:
        raise UnknownCurrencyError(f"unknown ISO 4217 currency code {code!r}") from None


def currency_for_ledger(ledger: int) -> Currency:
    try:
        return CURRENCIES_BY_LEDGER[ledger]
    except KeyError:
        raise UnknownCurrencyError(f"ledger {ledger} is not an ISO 4217 numeric code") from None


def parse_amount(text: str, currency: Currency) -> int:
    """Convert a decimal string in major units ("12.34") to integer minor units (1234), exactly.

    Rejects signs, exponents, blanks, and any string with more decimal places than the
    currency's exponent: a payment platform must never round an amount it was given. Integer
    arithmetic only: `decimal` would silently round past its 28-digit default precision.
    """
    whole, separator, fraction = text.partition(".")
    if (
        not whole
        or not (whole.isascii() and whole.isdigit())
        or (separator and not (fraction.isascii() and fraction.isdigit()))
    ):
        raise InvalidAmountError(f"amount {text!r} is not a plain non-negative decimal number")
    if len(fraction) > currency.exponent:
        raise InvalidAmountError(
            f"amount {text!r} has more decimal places than {currency.code} allows "
            f"({currency.exponent})"
        )
    # "12" and "3" in CNY (exponent 2) are the digits "1230": 1230 fen.
    return int(whole + fraction.ljust(currency.exponent, "0"))


def format_amount(minor_units: int, currency: Currency) -> str:
    """Format integer minor units as a decimal string in major units (1234 -> "12.34")."""
    sign = "-" if minor_units < 0 else ""
    magnitude = abs(minor_units)
    if currency.exponent == 0:
        return f"{sign}{magnitude}"
    scale = 10**currency.exponent
    whole, fraction = divmod(magnitude, scale)
    return f"{sign}{whole}.{fraction:0{currency.exponent}d}"
