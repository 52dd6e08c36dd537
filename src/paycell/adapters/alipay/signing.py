"""RSA2 as Alipay's Open API documents it, with `cryptography` only.

- The string to sign: every parameter except `sign` and empty values, sorted by key, joined
  as ``k=v&k=v`` with the raw (not URL-encoded) values. A request to the gateway signs its
  `sign_type` too (both SDKs do, as Alipay's request signing rules say); an asynchronous
  notification or a page return excludes `sign_type` as well (Alipay's notification rules).
- RSA2: SHA256withRSA, PKCS#1 v1.5 padding, the signature in standard base64.
- A synchronous response is signed over the exact JSON text of its `<method>_response`
  object, as it appears in the body.

Keys travel as Alipay's console shows them: the public key as bare base64 of its
SubjectPublicKeyInfo (no PEM markers), or as PEM; both are accepted everywhere.
"""

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_SIZE_BITS: Final = 2048
REQUEST_EXCLUDED: Final = frozenset({"sign"})
NOTIFICATION_EXCLUDED: Final = frozenset({"sign", "sign_type"})


class InvalidKeyError(ValueError):
    """Not an RSA public or private key in PEM or bare base64 DER."""


def content_to_sign(
    params: Mapping[str, str], excluded: frozenset[str] = NOTIFICATION_EXCLUDED
) -> str:
    """``k=v&...`` over the sorted non-empty parameters, without the `excluded` ones (by
    default sign and sign_type, as for notifications; requests: `REQUEST_EXCLUDED`)."""
    return "&".join(
        f"{key}={params[key]}"
        for key in sorted(params)
        if key not in excluded and params[key] != ""
    )


def generate_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE_BITS)


def private_key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_key_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def bare_base64(pem: str) -> str:
    """A PEM's base64 body on one line, the way Alipay's console shows keys."""
    return "".join(line.strip() for line in pem.strip().splitlines() if "-----" not in line)


def _der(text: str) -> bytes:
    body = bare_base64(text) if "-----" in text else "".join(text.split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyError("the key is neither PEM nor base64") from None


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """An RSA public key from PEM (SubjectPublicKeyInfo or PKCS#1) or bare base64 DER."""
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_public_key(text.strip().encode())
        else:
            der = _der(text)
            try:
                key = serialization.load_der_public_key(der)
            except ValueError:
                # Bare PKCS#1 ("RSA PUBLIC KEY") has no DER loader of its own.
                pem = "-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der).decode()
                key = serialization.load_pem_public_key(
                    (pem + "-----END RSA PUBLIC KEY-----\n").encode()
                )
    except (ValueError, TypeError, InvalidKeyError):
        raise InvalidKeyError("not an RSA public key (PEM or base64 DER expected)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidKeyError("the key is not an RSA key")
    if key.key_size < KEY_SIZE_BITS:
        raise InvalidKeyError(f"RSA2 needs a key of at least {KEY_SIZE_BITS} bits")
    return key


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(text.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise InvalidKeyError("not an unencrypted RSA private key in PEM") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKeyError("the key is not an RSA key")
    return key


def sign(key: rsa.RSAPrivateKey, text: str) -> str:
    """RSA2: base64 of SHA256withRSA (PKCS#1 v1.5) over the UTF-8 bytes of `text`."""
    signature = key.sign(text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(key: rsa.RSAPublicKey, text: str, signature: str) -> bool:
    """True when `signature` (base64) is RSA2 of `text` under `key`; False for anything
    else, including a signature that is not base64."""
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(raw, text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def sign_params(
    key: rsa.RSAPrivateKey,
    params: Mapping[str, str],
    excluded: frozenset[str] = NOTIFICATION_EXCLUDED,
) -> str:
    return sign(key, content_to_sign(params, excluded))


def verify_params(
    key: rsa.RSAPublicKey,
    params: Mapping[str, str],
    excluded: frozenset[str] = NOTIFICATION_EXCLUDED,
) -> bool:
    return verify(key, content_to_sign(params, excluded), params.get("sign", ""))
