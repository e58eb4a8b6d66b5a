"""Signed acknowledge links: work without logging in, for one incident, until they expire.

A link carries the incident id, an expiry and an HMAC-SHA256 of both under a
key only the daemon knows, so it cannot be forged for another incident or
kept alive past its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path


def key_file(data_dir: Path, name: str) -> bytes:
    """A secret key kept in the data directory, created (mode 0600) on first use.

    Several daemons sharing one PostgreSQL must share these files (or the
    configured keys), or links and the audit chain of one are foreign to the other.
    """
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(secrets.token_bytes(32))
    return path.read_bytes()


class LinkSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the link signing key must have at least 16 bytes")
        self._key = key

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> LinkSigner:
        return cls(key_file(data_dir, "link-signing.key"))

    def _mac(self, incident_id: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{incident_id}|{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")

    def token(self, incident_id: str, expires: float) -> str:
        return f"{int(expires)}.{self._mac(incident_id, int(expires))}"

    def verify(self, incident_id: str, token: str, now: float) -> str | None:
        """None when the token is good for this incident now, else why not."""
        expires_text, _, mac = token.partition(".")
        if not expires_text.isdigit() or not mac:
            return "malformed link"
        expires = int(expires_text)
        if not hmac.compare_digest(mac, self._mac(incident_id, expires)):
            return "this link is not valid for this incident"
        if now > expires:
            return "this link has expired; acknowledge in the API or CLI instead"
        return None
