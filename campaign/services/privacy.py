"""Encryption of signer data at rest and the keyed hashes that stand in for raw values."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


class SignerCipher:
    """Fernet with rotation: the first key encrypts, every key decrypts."""

    def __init__(self, keys: str, blind_index_key: str) -> None:
        parts = [key.strip() for key in keys.split(",") if key.strip()]
        if not parts:
            raise ValueError("SIGNER_DATA_KEYS holds no key")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in parts])
        self._index_key = hashlib.sha256(b"blind-index:" + blind_index_key.encode()).digest()
        self._ip_key = hashlib.sha256(b"ip-hash:" + blind_index_key.encode()).digest()

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode("utf-8")
        except InvalidToken:
            raise ValueError("signer data cannot be decrypted with the configured keys") from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt a value under the current key (after a new key is put first)."""
        return self._fernet.rotate(bytes(token))

    def blind_index(self, canonical_email: str) -> str:
        return hmac.new(self._index_key, canonical_email.encode("utf-8"), hashlib.sha256).hexdigest()

    def ip_hashes(self, address: str | None) -> tuple[str | None, str | None]:
        """Keyed hashes of an address and of its network (/24 for IPv4, /48 for IPv6)."""
        if not address:
            return None, None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None, None
        prefix = 24 if ip.version == 4 else 48
        network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
        digest = hmac.new(self._ip_key, str(ip).encode(), hashlib.sha256).hexdigest()
        net_digest = hmac.new(self._ip_key, str(network).encode(), hashlib.sha256).hexdigest()
        return digest, net_digest


def cipher() -> SignerCipher:
    """The app's cipher, built once per app from its configured keys."""
    app = current_app
    existing = app.extensions.get("campaign.cipher")
    if existing is None:
        existing = SignerCipher(app.config["SIGNER_DATA_KEYS"], app.config["BLIND_INDEX_KEY"])
        app.extensions["campaign.cipher"] = existing
    return cast(SignerCipher, existing)
