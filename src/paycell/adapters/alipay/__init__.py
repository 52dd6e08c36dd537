"""The Alipay Open API compatible gateway: an adapter over the payment platform.

Merchants' code written for Alipay's SDKs talks to `/gateway.do` unchanged; every call
becomes platform commands on the same orders, refunds and ledger. See docs/alipay.md.
"""

from paycell.adapters.alipay.gateway import METHODS, AlipayError, AlipayGateway, Answer
from paycell.adapters.alipay.notify import AlipayNotifier, HttpNotifySender
from paycell.adapters.alipay.routes import alipay_routes
from paycell.adapters.alipay.store import GatewayStore

__all__ = [
    "METHODS",
    "AlipayError",
    "AlipayGateway",
    "AlipayNotifier",
    "Answer",
    "GatewayStore",
    "HttpNotifySender",
    "alipay_routes",
]
