"""Signed acknowledge links: work without logging in, for one incident, until they expire.

A link carries the incident id, an expiry and an HMAC-SHA256 of both under a
key only the daemon knows, so it cannot be forged for another incident or
kept alive past its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

_MAX_EXPIRY_DIGITS = 12  # Unix seconds until the year 33658


def key_file(data_dir: Path, name: str) -> bytes:
    """A secret key kept in the data directory, created (mode 0600) on first use.

    Several daemons sharing one PostgreSQL must share these files (or the
    configured keys), or links and the audit chain of one are foreign to the other.
    """
    path = data_dir / name
    if not path.exists():
        private_directory(data_dir)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    return path.read_bytes()


def private_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by this user only: mode 0700.

    The mode is given explicitly rather than left to the process umask. An
    existing directory is left as the operator set it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


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
        # ASCII digits of a sane length and an ASCII MAC: anything else (a mangled or
        # hostile link) is malformed, never an exception from int() or compare_digest.
        if not (
            expires_text.isascii()
            and expires_text.isdigit()
            and len(expires_text) <= _MAX_EXPIRY_DIGITS
            and mac.isascii()
            and mac
        ):
            return "malformed link"
        expires = int(expires_text)
        if not hmac.compare_digest(mac, self._mac(incident_id, expires)):
            return "this link is not valid for this incident"
        if now > expires:
            return "this link has expired; acknowledge in the API or CLI instead"
        return None
