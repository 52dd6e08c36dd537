"""The webhook retry schedule (Alipay's: 8 tries over about 25 hours) and the signature."""

import pytest

from paycell.core.payments.webhook_schedule import (
    MAX_ATTEMPTS,
    RETRY_DELAYS_SECONDS,
    next_attempt_at,
    signature_header,
    verify_signature,
)

NS = 1_000_000_000
NOW = 1_700_006_400
SECRET = "whsec_test"
BODY = '{"order_id": 1, "status": "TRADE_SUCCESS"}'


def test_eight_tries_over_about_25_hours() -> None:
    assert MAX_ATTEMPTS == 8
    assert RETRY_DELAYS_SECONDS == (240, 600, 600, 3_600, 7_200, 21_600, 54_000)
    assert 24 * 3_600 <= sum(RETRY_DELAYS_SECONDS) <= 25 * 3_600


def test_next_attempt_follows_the_schedule_then_stops() -> None:
    start = NOW * NS
    assert next_attempt_at(0, start) == start
    at = start
    times = []
    for attempts in range(1, MAX_ATTEMPTS):
        due = next_attempt_at(attempts, at)
        assert due is not None
        times.append((due - at) // NS)
        at = due
    assert tuple(times) == RETRY_DELAYS_SECONDS
    assert (at - start) // NS == sum(RETRY_DELAYS_SECONDS)
    assert next_attempt_at(MAX_ATTEMPTS, at) is None
    assert next_attempt_at(MAX_ATTEMPTS + 3, at) is None
    with pytest.raises(ValueError, match="negative"):
        next_attempt_at(-1, at)


def test_signature_header_format_and_known_value() -> None:
    header = signature_header(SECRET, 1_700_006_400, '{"order_id": 1}')
    assert header == (
        "t=1700006400,v1=16475538078476464dd85a698a3dc3409f8a7517fb2058cfb7c998b00309f9b4"
    )


@pytest.mark.parametrize("body", [BODY, BODY.encode()])
def test_signature_round_trip(body: str | bytes) -> None:
    header = signature_header(SECRET, NOW, body)
    assert verify_signature(SECRET, header, BODY, NOW)
    assert verify_signature(SECRET, header, BODY.encode(), NOW + 299)
    assert verify_signature(SECRET, header, BODY, NOW - 300)


def test_tampered_body_other_secret_and_stale_timestamp_are_rejected() -> None:
    header = signature_header(SECRET, NOW, BODY)
    assert not verify_signature(SECRET, header, BODY.replace("1", "2"), NOW)
    assert not verify_signature(SECRET, header, BODY + " ", NOW)
    assert not verify_signature("whsec_other", header, BODY, NOW)
    assert not verify_signature(SECRET, header, BODY, NOW + 301)
    assert not verify_signature(SECRET, header, BODY, NOW - 301)
    assert verify_signature(SECRET, header, BODY, NOW + 3_600, tolerance_seconds=3_600)
    # A captured signature moved to another timestamp does not verify.
    digest = header.split("v1=")[1]
    assert not verify_signature(SECRET, f"t={NOW + 1},v1={digest}", BODY, NOW)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"v1={'0' * 64}",
        f"t={NOW}",
        f"t=abc,v1={'0' * 64}",
        f"t=-{NOW},v1={'0' * 64}",
        f"t={NOW},t={NOW},v1={'0' * 64}",
        f"t={NOW},v1=not-hex-é",
        f"t={NOW},v1",
    ],
)
def test_malformed_headers_are_rejected(header: str) -> None:
    assert not verify_signature(SECRET, header, BODY, NOW)


def test_any_matching_v1_is_enough_and_unknown_schemes_are_ignored() -> None:
    good = signature_header(SECRET, NOW, BODY).split(",")[1]
    header = f"t={NOW},v1={'0' * 64},{good},v2=future"
    assert verify_signature(SECRET, header, BODY, NOW)
