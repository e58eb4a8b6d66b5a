"""Console sign-in: session cookies, CSRF tokens and the throttle on wrong tokens.

A session is a signed cookie, not a row: it names the API token (never its
secret), the person's name as typed at sign-in, an expiry and a random session
id, under an HMAC whose key lives in the data directory (like the acknowledge
links' key; replicas share it the same way). The token's roles are read from the
config on every request, so a reload that drops a token or takes a role away
ends or narrows its sessions at once; a fingerprint of the token's secret is in
the MAC, so rotating the secret signs its sessions out too.

Signing out forgets the session id on this node until the cookie would have
expired anyway (a cookie copied before sign-out is refused here; another
replica still honours it until its expiry: keep ``console.session_ttl`` short
where that matters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.config.models import ApiToken

PERSON_MAX_CHARS = 80
_MAX_COOKIE_CHARS = 2048
_MAX_REVOKED = 100_000


@dataclass(frozen=True, slots=True)
class Session:
    """Who is signed in: the token, the person's name (may be empty), until when."""

    token_name: str
    person: str
    expires: float
    sid: str

    @property
    def actor(self) -> str:
        """The name the timeline and the audit chain record: ``Li Wei (noc)``, or the
        token's name when the person gave none."""
        return f"{self.person} ({self.token_name})" if self.person else self.token_name


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _fingerprint(token: ApiToken) -> str:
    return hashlib.sha256(token.token.get_secret_value().encode()).hexdigest()[:32]


class SessionKeeper:
    """Issues and reads session cookies and the CSRF tokens bound to them."""

    def __init__(self, key: bytes, wall: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the session key must have at least 16 bytes")
        self._key = key
        self._wall = wall
        self._revoked: dict[str, float] = {}  # session id -> its expiry

    def _mac(self, *parts: str) -> str:
        message = "|".join(parts).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest()[:24])

    def issue(self, token: ApiToken, person: str, ttl: float) -> tuple[str, Session]:
        """A new session for ``token``: (the cookie's value, the session)."""
        session = Session(
            token.name, person[:PERSON_MAX_CHARS], self._wall() + ttl, _b64(secrets.token_bytes(12))
        )
        payload = _b64(
            json.dumps(
                {
                    "n": session.token_name,
                    "p": session.person,
                    "e": session.expires,
                    "s": session.sid,
                },
                ensure_ascii=False,
            ).encode()
        )
        return f"{payload}.{self._mac('session', payload, _fingerprint(token))}", session

    def read(self, cookie: str, tokens: Sequence[ApiToken]) -> tuple[Session, ApiToken] | None:
        """The session and its token, or None for a cookie that is forged, expired, signed
        out, or whose token is gone from the config or has a new secret."""
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS or not cookie.isascii():
            return None
        payload, _, mac = cookie.partition(".")
        try:
            fields = json.loads(_unb64(payload))
            session = Session(
                str(fields["n"]), str(fields["p"]), float(fields["e"]), str(fields["s"])
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        token = next((t for t in tokens if t.name == session.token_name), None)
        if token is None or not token.token.get_secret_value():
            return None
        expected = self._mac("session", payload, _fingerprint(token))
        if not hmac.compare_digest(mac, expected):
            return None
        if self._wall() >= session.expires or session.sid in self._revoked:
            return None
        return session, token

    def revoke(self, session: Session) -> None:
        """Sign ``session`` out on this node."""
        now = self._wall()
        if len(self._revoked) >= _MAX_REVOKED:
            self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        self._revoked[session.sid] = session.expires

    def csrf(self, sid: str) -> str:
        """The token every form of session ``sid`` carries (or of a sign-in form's nonce)."""
        return self._mac("csrf", sid)

    def csrf_ok(self, sid: str, presented: object) -> bool:
        return (
            isinstance(presented, str)
            and presented.isascii()
            and hmac.compare_digest(presented, self.csrf(sid))
        )


class SignInThrottle:
    """Slows guessing of tokens: after ``allowed`` wrong tokens from one address, each
    further try must wait, 1 s doubling up to 15 min after the last failure; a good
    token clears the address. An address silent for a day is forgotten."""

    LONGEST_WAIT = 900.0
    FORGET_AFTER = 86400.0
    MAX_ADDRESSES = 10_000

    def __init__(self, allowed: int, wall: Callable[[], float] = time.time) -> None:
        self.allowed = allowed
        self._wall = wall
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (count, last)

    def wait(self, address: str) -> float:
        """Seconds before ``address`` may try again (0: now)."""
        count, last = self._failures.get(address, (0, 0.0))
        if count < self.allowed:
            return 0.0
        penalty = min(2.0 ** (count - self.allowed), self.LONGEST_WAIT)
        return max(0.0, last + penalty - self._wall())

    def failed(self, address: str) -> None:
        now = self._wall()
        if len(self._failures) >= self.MAX_ADDRESSES:
            self._failures = {
                a: entry
                for a, entry in self._failures.items()
                if now - entry[1] < self.FORGET_AFTER
            }
        count, last = self._failures.get(address, (0, now))
        if now - last >= self.FORGET_AFTER:
            count = 0
        self._failures[address] = (count + 1, now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
