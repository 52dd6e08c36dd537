"""How records look as JSON: one rule per kind of field, and times in UTC to the nanosecond."""

from datetime import UTC, datetime

from paycell.adapters.http.render import iso_time, record
from paycell.core.payments.records import Merchant


def _reference_iso(nanoseconds: int) -> str:
    seconds, remainder = divmod(nanoseconds, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).isoformat()[:19] + f".{remainder:09d}Z"


def test_times_render_in_utc_to_the_nanosecond_and_unset_times_as_null() -> None:
    singles_day = 1_731_283_200 * 1_000_000_000
    for nanoseconds in (1, singles_day, singles_day + 7, singles_day + 999_999_999, 2**62):
        assert iso_time(nanoseconds) == _reference_iso(nanoseconds)
        # A second already formatted renders the same from memory.
        assert iso_time(nanoseconds) == _reference_iso(nanoseconds)
    assert iso_time(singles_day) == "2024-11-11T00:00:00.000000000Z"
    assert iso_time(0) is None


def test_a_record_renders_times_twice_hides_secrets_and_tags_its_kind() -> None:
    merchant = Merchant(
        id=7,
        name="shop",
        fee_rate_basis_points=60,
        settlement_bank_account="6222",
        webhook_url="https://shop.example/hook",
        webhook_secret="never shown",
        created_at=1_731_283_200_000_000_001,
        daily_payout=False,
    )
    assert record(merchant, "merchant") == {
        "object": "merchant",
        "id": 7,
        "name": "shop",
        "fee_rate_basis_points": 60,
        "settlement_bank_account": "6222",
        "webhook_url": "https://shop.example/hook",
        "created_at": 1_731_283_200_000_000_001,
        "created_at_iso": "2024-11-11T00:00:00.000000001Z",
        "daily_payout": False,
    }
