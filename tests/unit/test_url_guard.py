"""The server refuses to send merchants' callbacks into its own network (SSRF)."""

import pytest

from paycell.adapters.url_guard import ALLOW_PRIVATE_ENVIRONMENT_VARIABLE, refusal
from paycell.adapters.webhooks.sender import HttpWebhookSender


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/admin",
        "http://localhost/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ],
)
def test_internal_addresses_are_refused(url: str) -> None:
    reason = refusal(url, allow_private=False)
    assert reason is not None
    assert "not a public address" in reason


@pytest.mark.parametrize("url", ["ftp://example.com/", "http:///nohost", "javascript:alert(1)"])
def test_only_http_urls_with_a_host(url: str) -> None:
    assert refusal(url, allow_private=True) == "the URL must be http(s) with a host"


def test_public_addresses_are_allowed() -> None:
    assert refusal("https://93.184.216.34/notify", allow_private=False) is None


def test_operators_can_allow_private_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE_ENVIRONMENT_VARIABLE, "1")
    assert refusal("http://127.0.0.1:9/") is None
    monkeypatch.delenv(ALLOW_PRIVATE_ENVIRONMENT_VARIABLE)
    assert refusal("http://127.0.0.1:9/") is not None


def test_the_webhook_sender_does_not_send_to_a_refused_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ALLOW_PRIVATE_ENVIRONMENT_VARIABLE, raising=False)
    with HttpWebhookSender() as sender:
        outcome = sender.post("http://127.0.0.1:9/hook", "{}", {})
    assert not outcome.delivered
    assert outcome.error.startswith("not sent:")
