"""`paycell alipay ...`: merchant onboarding and buyers without a phone, on the database.

- `register-app --merchant-id N --public-key FILE`: a new app_id for the merchant with the
  app's RSA public key (PEM or bare base64); prints the app_id and the platform's public key.
- `platform-key`: the platform's public key (merchants verify responses with it).
- `payment-code --api-key KEY`: a one-time payment code for bar_code pay (the user's key).
- `scan --api-key KEY QR_CODE`: pay a scanned qr_code URL (or trade_no) from the wallet.

Output is one JSON object; exit 0 on success, 1 when refused, 2 for bad input.
"""

import argparse
import json
from pathlib import Path
from typing import IO

from paycell.adapters.alipay import gateway as gw
from paycell.adapters.alipay.gateway import AlipayGateway
from paycell.adapters.alipay.signing import InvalidKeyError
from paycell.core.payments.records import PartyKind
from paycell.platform import Platform


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="alipay_command", required=True, metavar="ALIPAY")
    register = commands.add_parser("register-app", help="register an Alipay app for a merchant")
    register.add_argument("--merchant-id", type=int, required=True)
    register.add_argument("--public-key", required=True, help="file with the app's RSA public key")
    commands.add_parser("platform-key", help="print the platform's RSA2 public key")
    code = commands.add_parser("payment-code", help="a buyer's one-time payment code")
    code.add_argument("--api-key", required=True, help="the user's paycell API key")
    scan = commands.add_parser("scan", help="pay a scanned qr_code URL from the wallet")
    scan.add_argument("--api-key", required=True, help="the user's paycell API key")
    scan.add_argument("qr_code", help="the qr_code URL (or a trade_no)")


def _print(out: IO[str], payload: dict[str, object]) -> None:
    print(json.dumps(payload, ensure_ascii=False), file=out)


def run(arguments: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    with Platform(arguments.database) as platform:
        gateway = AlipayGateway(platform)
        try:
            return _run(arguments, platform, gateway, out, err)
        finally:
            gateway.close()


def _run(
    arguments: argparse.Namespace,
    platform: Platform,
    gateway: AlipayGateway,
    out: IO[str],
    err: IO[str],
) -> int:
    command = arguments.alipay_command
    if command == "platform-key":
        _print(
            out,
            {
                "alipay_public_key": gateway.public_key,
                "alipay_public_key_pem": gateway.public_key_pem,
            },
        )
        return 0
    if command == "register-app":
        try:
            key = Path(arguments.public_key).read_text()
        except OSError as problem:
            print(f"paycell: error: unreadable_input: {problem}", file=err)
            return 2
        try:
            app = gateway.register_app(arguments.merchant_id, key)
        except InvalidKeyError as problem:
            print(f"paycell: error: invalid_field: public_key: {problem}", file=err)
            return 2
        except ValueError as problem:
            print(f"paycell: error: merchant_not_found: {problem}", file=err)
            return 1
        _print(
            out,
            {
                "app_id": app.app_id,
                "merchant_id": app.merchant_id,
                "sign_type": "RSA2",
                "alipay_public_key": gateway.public_key,
            },
        )
        return 0
    party = platform.authenticate(arguments.api_key)
    if party is None or party[0] is not PartyKind.USER:
        print("paycell: error: unauthorized: not a user's API key", file=err)
        return 2
    user_id = party[1]
    if command == "payment-code":
        code = gateway.issue_payment_code(user_id)
        _print(
            out,
            {
                "auth_code": code.code,
                "user_id": user_id,
                "expires_at": gw.beijing_time(code.expires_at),
            },
        )
        return 0
    assert command == "scan", command
    trade = str(arguments.qr_code).rstrip("/").rsplit("/", 1)[-1]
    order_id = gw.order_id_of_trade_no(trade)
    order = platform.get_order(order_id) if order_id is not None else None
    if order is None or gw.trade_no(order) != trade:
        print("paycell: error: order_not_found: no such trade", file=err)
        return 1
    decision = gateway.pay_on_cashier(order.id, user_id)
    if not decision.ok:
        assert decision.error is not None
        print(f"paycell: error: {decision.error.value}: {decision.message}", file=err)
        return 1
    paid = decision.orders[0]
    _print(
        out,
        {
            "trade_no": gw.trade_no(paid),
            "out_trade_no": paid.out_trade_no,
            "trade_status": paid.status.value,
            "total_amount": gw.yuan(paid.amount),
        },
    )
    return 0
