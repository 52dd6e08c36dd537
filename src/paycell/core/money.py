"""Integer money arithmetic: fees and currency conversion, rounded half-even.

Amounts are integer minor units; a rate is an exact fraction of integers. Nothing here touches
a float, and the one rounding each function does is round-half-even (banker's rounding), so
that over many payments the roundings do not drift in either party's favour.
"""

BASIS_POINTS_PER_UNIT = 10_000


def divide_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, ties to even (both >= 0)."""
    assert numerator >= 0
    assert denominator > 0
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def fee_for(amount: int, basis_points: int) -> int:
    """The fee on `amount` at `basis_points` (60 = 0.60%), rounded half-even."""
    return divide_half_even(amount * basis_points, BASIS_POINTS_PER_UNIT)


def convert(amount: int, rate_numerator: int, rate_denominator: int) -> int:
    """`amount` in one currency's minor units times an exact rate, rounded half-even."""
    return divide_half_even(amount * rate_numerator, rate_denominator)
