"""Drive one of the two published Alipay SDKs from a subprocess, one JSON line per call.

Both SDKs are imported as `alipay`, so each runs in a process of its own: the official
`alipay-sdk-python` from the virtual environment, `python-alipay-sdk` from the directory
given as the second argument (installed there with `pip install --target`).

    python sdk_bridge.py official|community [SDK_DIRECTORY]

stdin: one JSON object per line, the first {"init": {...}}, then {"call": ...},
{"page": ...} or {"verify": ...}; stdout: one JSON answer per line ({"ok": ...} or
{"error": "..."}). The SDKs are used as a merchant would use them, with one exception,
documented in docs/alipay.md: the official SDK cannot reach a server on a port other than
80/443 (it always connects to port 80 and crashes adding the port to the URL), so
`get_http_connection` is replaced by the same function with the port kept.
"""

import json
import sys
import traceback
from typing import Any

KIND = sys.argv[1]
if len(sys.argv) > 2:
    sys.path.insert(0, sys.argv[2])


def _camel(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("."))


class Official:
    def __init__(self, config: dict[str, Any]) -> None:
        import http.client
        import urllib.parse

        from alipay.aop.api import (
            AlipayClientConfig,
            DefaultAlipayClient,
        )
        from alipay.aop.api.util import WebUtils

        def get_http_connection(url: str, query_string: str, timeout: int) -> Any:
            # Upstream, verbatim, except that the URL's port is used (and added as text).
            parsed = urllib.parse.urlparse(url)
            assert parsed.hostname is not None  # the gateway URL always names a host
            if url.find("https") == 0:
                connection: Any = http.client.HTTPSConnection(
                    host=parsed.hostname, port=parsed.port or 443, timeout=timeout
                )
            else:
                connection = http.client.HTTPConnection(
                    host=parsed.hostname, port=parsed.port or 80, timeout=timeout
                )
            url = parsed.scheme + "://" + str(parsed.hostname)
            if parsed.port:
                url += ":" + str(parsed.port)
            url += parsed.path + "?" + query_string
            return url, connection

        WebUtils.get_http_connection = get_http_connection
        client_config = AlipayClientConfig.AlipayClientConfig()
        client_config.server_url = config["gateway"]
        client_config.app_id = config["app_id"]
        client_config.app_private_key = config["app_private_key_pkcs1"]
        client_config.alipay_public_key = config["alipay_public_key"]
        client_config.sign_type = "RSA2"
        self.client = DefaultAlipayClient.DefaultAlipayClient(client_config)

    def _request(self, method: str, biz: dict[str, Any], urls: dict[str, str]) -> Any:
        import importlib

        name = _camel(method)
        request_class = getattr(
            importlib.import_module(f"alipay.aop.api.request.{name}Request"), f"{name}Request"
        )
        model_class = getattr(
            importlib.import_module(f"alipay.aop.api.domain.{name}Model"), f"{name}Model"
        )
        request = request_class(biz_model=model_class.from_alipay_dict(biz))
        if urls.get("notify_url"):
            request.notify_url = urls["notify_url"]
        if urls.get("return_url"):
            request.return_url = urls["return_url"]
        return request

    def call(self, method: str, biz: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
        import importlib

        text = self.client.execute(self._request(method, biz, urls))  # verifies the sign
        name = _camel(method)
        response_class = getattr(
            importlib.import_module(f"alipay.aop.api.response.{name}Response"), f"{name}Response"
        )
        response = response_class()
        response.parse_response_content(text)
        result: dict[str, Any] = json.loads(text)
        result["_is_success"] = response.is_success()
        return result

    def page(self, method: str, biz: dict[str, Any], urls: dict[str, str]) -> str:
        return str(self.client.page_execute(self._request(method, biz, urls), http_method="GET"))

    def verify(self, params: dict[str, str], public_key: str) -> bool:
        from alipay.aop.api.util.SignatureUtils import (
            get_sign_content,
            verify_with_rsa,
        )

        signature = params.pop("sign")
        params.pop("sign_type", None)
        content = get_sign_content(params).encode("utf-8")
        try:
            return bool(verify_with_rsa(public_key, content, signature))
        except Exception as failure:  # the official SDK raises rsa's VerificationError
            if type(failure).__name__ == "VerificationError":
                return False
            raise


class Community:
    def __init__(self, config: dict[str, Any]) -> None:
        from alipay import AliPay

        self.client = AliPay(
            appid=config["app_id"],
            app_notify_url=None,
            app_private_key_string=config["app_private_key_pem"],
            alipay_public_key_string=config["alipay_public_key_pem"],
            sign_type="RSA2",
        )
        self.client._gateway = config["gateway"]

    def call(self, method: str, biz: dict[str, Any], urls: dict[str, str]) -> dict[str, Any]:
        c = self.client
        b = dict(biz)
        notify = urls.get("notify_url")
        if method == "alipay.trade.precreate":
            return dict(
                c.api_alipay_trade_precreate(
                    b.pop("subject"),
                    b.pop("out_trade_no"),
                    b.pop("total_amount"),
                    notify_url=notify,
                    **b,
                )
            )
        if method == "alipay.trade.create":
            return dict(
                c.api_alipay_trade_create(
                    b.pop("subject"),
                    b.pop("out_trade_no"),
                    b.pop("total_amount"),
                    notify_url=notify,
                    **b,
                )
            )
        if method == "alipay.trade.pay":
            return dict(
                c.api_alipay_trade_pay(
                    b.pop("out_trade_no"),
                    b.pop("scene"),
                    b.pop("auth_code"),
                    b.pop("subject"),
                    notify_url=notify,
                    **b,
                )
            )
        if method == "alipay.trade.query":
            return dict(c.api_alipay_trade_query(**b))
        if method == "alipay.trade.refund":
            return dict(c.api_alipay_trade_refund(b.pop("refund_amount"), **b))
        if method == "alipay.trade.fastpay.refund.query":
            return dict(c.api_alipay_trade_fastpay_refund_query(b.pop("out_request_no"), **b))
        if method == "alipay.trade.close":
            return dict(c.api_alipay_trade_close(**b))
        if method == "alipay.trade.cancel":
            return dict(c.api_alipay_trade_cancel(**b))
        # No dedicated helper (transfer, bill): the SDK's generic call.
        return dict(c.server_api(method, b, **({"notify_url": notify} if notify else {})))

    def page(self, method: str, biz: dict[str, Any], urls: dict[str, str]) -> str:
        b = dict(biz)
        helper = (
            self.client.api_alipay_trade_page_pay
            if method == "alipay.trade.page.pay"
            else self.client.api_alipay_trade_wap_pay
        )
        query = helper(
            b.pop("subject"),
            b.pop("out_trade_no"),
            b.pop("total_amount"),
            return_url=urls.get("return_url"),
            notify_url=urls.get("notify_url"),
            **b,
        )
        return f"{self.client._gateway}?{query}"

    def verify(self, params: dict[str, str], public_key: str) -> bool:
        signature = params.pop("sign")
        return bool(self.client.verify(params, signature))


def main() -> None:
    sdk: Any = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "init" in request:
                sdk = (Official if KIND == "official" else Community)(request["init"])
                answer: Any = True
            elif "call" in request:
                answer = sdk.call(request["call"], request["biz"], request.get("urls", {}))
            elif "page" in request:
                answer = sdk.page(request["page"], request["biz"], request.get("urls", {}))
            else:
                answer = sdk.verify(request["verify"], request["public_key"])
            reply = {"ok": answer}
        except Exception as problem:
            reply = {
                "error": f"{type(problem).__name__}: {problem}",
                "trace": traceback.format_exc(),
            }
        sys.stdout.write(json.dumps(reply, ensure_ascii=False) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
