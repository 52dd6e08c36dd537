"""Fee and conversion rounding: round-half-even on integer minor units, never a float."""

import pytest

from paycell.core.money import convert, divide_half_even, fee_for


@pytest.mark.parametrize(
    ("numerator", "denominator", "rounded"),
    [
        (1, 2, 0),
        (5, 2, 2),
        (7, 2, 4),
        (9, 2, 4),
        (11, 2, 6),
        (1, 3, 0),
        (2, 3, 1),
        (10, 5, 2),
        (0, 7, 0),
    ],
)
def test_ties_round_to_even_and_the_rest_to_nearest(
    numerator: int, denominator: int, rounded: int
) -> None:
    assert divide_half_even(numerator, denominator) == rounded


def test_fee_in_basis_points_rounds_half_even() -> None:
    assert fee_for(10_000, 60) == 60  # 0.60% of 100.00 is 0.60 exactly
    assert fee_for(250, 60) == 2  # 1.50 fen rounds to 2 (even)
    assert fee_for(750, 60) == 4  # 4.50 fen rounds to 4 (even)
    assert fee_for(751, 60) == 5  # 4.506 fen rounds to 5


def test_fee_beyond_64_bits_rounds_half_even_exactly() -> None:
    # 1 basis point of 10_000 * 2**70 + 5_000 is 2**70 + 0.5: the tie goes to the even 2**70.
    assert fee_for(10_000 * 2**70 + 5_000, 1) == 2**70
    # One more unit of fee makes it 2**70 + 1.5: the tie goes up, to the even 2**70 + 2.
    assert fee_for(10_000 * 2**70 + 15_000, 1) == 2**70 + 2


def test_conversion_is_exact_for_amounts_beyond_float_precision() -> None:
    amount = 10**30 + 1
    assert convert(amount, 71_234, 10_000) == divide_half_even(amount * 71_234, 10_000)
    assert convert(10_000, 71_234, 10_000) == 71_234
