"""Webhooks on the wire: an HTTP sender and the dispatcher that drives deliveries.

`WebhookDispatcher(service, HttpWebhookSender())` claims due deliveries from
`service.webhooks.WebhookService`, posts each signed notification outside any transaction,
and records what came of it. `run(stop)` does that once a second until `stop` is set.
"""

from paycell.adapters.webhooks.dispatcher import DispatchReport, WebhookDispatcher
from paycell.adapters.webhooks.sender import (
    HttpWebhookSender,
    SendOutcome,
    WebhookSender,
    webhook_headers,
)

__all__ = [
    "DispatchReport",
    "HttpWebhookSender",
    "SendOutcome",
    "WebhookDispatcher",
    "WebhookSender",
    "webhook_headers",
]
