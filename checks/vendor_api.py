"""How the vendor health checks call Microsoft Graph and Azure Resource Manager.

Request budget. Everything worth keeping between probes lives in one
:class:`VendorCache` stored in ``ProbeContext.cache`` (the daemon keeps one dict
for all probes, so every check shares it):

- access tokens, per (authority, tenant, client id, scope), until 60 s before
  they expire; a 401 on a cached token drops it and signs in once more;
- each fetched document, per tenant or subscription, for the check's
  ``reuse_within``: every check reading the same tenant in that time shares one
  sign-in and one read, and a lock makes concurrent probes wait for the one read
  in flight instead of starting their own (a failure is shared for 5 s only, so
  the daemon's quick re-probes of a failing check really ask again);
- the time a 429's ``Retry-After`` asked us to wait: no call before it. Meanwhile
  a probe shows the last state read (if not older than ``max_stale``) as a
  success whose reason says it is throttled and how old the state is; without
  such a state the probe fails with "throttled (429), retry after N s";
- the api-version that worked (``azure_resource_health``'s fallback).

Secrets: the client secret and tokens go only into the token request and the
Authorization header; reasons and logs carry status codes and the vendor's
error codes, never bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import aiohttp
from multidict import CIMultiDict
from pydantic import SecretStr
from yarl import URL

from checks.azure_oauth import client_credentials_form, read_answer, token_url
from monitor.probe import ProbeContext, describe_error
from monitor.retry_after import retry_after_header

log = logging.getLogger(__name__)

T = TypeVar("T")
Headers = CIMultiDict[str]
CACHE_KEY = "vendor_health"
TOKEN_MARGIN = 60.0  # a token this close to expiry is not used any more
DEFAULT_TOKEN_LIFETIME = 3599.0  # an answer without a usable expires_in: Azure AD's usual hour
DEFAULT_RETRY_AFTER = 60.0  # a 429 without Retry-After
MAX_RETRY_AFTER = 3600.0
# A failed read is shared only by checks probing at about the same moment: the daemon's
# quick re-probes of a failing check (retry_interval) must each ask the API again.
FAILURE_REUSE = 5.0
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")  # vendor error codes: InvalidAuthenticationToken
# ARM's answers to an api-version (or a resource type) this cloud does not serve.
VERSION_ERRORS = {"noregisteredproviderfound", "invalidapiversionparameter"}


class VendorApiError(Exception):
    """The vendor API could not be read; ``reason`` is operator-readable and secret-free."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Throttled(VendorApiError):
    """A 429: ``retry_after`` seconds (from Retry-After, else 60 s, at most an hour)."""

    def __init__(self, where: str, retry_after: float) -> None:
        super().__init__(f"{where}: throttled (429), retry after {math.ceil(retry_after)} s")
        self.where = where
        self.retry_after = retry_after


class RequestRefused(VendorApiError):
    """A 400 or 404 with the vendor's error code and message, for callers to classify."""

    def __init__(self, where: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{where}: status {status}{f': {code}' if code else ''}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Credentials:
    """An app registration's client credentials for one tenant and one API."""

    authority: str
    tenant: str
    client_id: str
    client_secret: SecretStr
    scope: str

    @property
    def key(self) -> tuple[str, ...]:
        return (self.authority.rstrip("/"), self.tenant.lower(), self.client_id, self.scope)


@dataclass
class _Token:
    value: str = field(repr=False)
    use_until: float


@dataclass(frozen=True)
class Fetched(Generic[T]):
    """One read of a vendor document: the document, or why there is none."""

    at: float
    document: T | None = None
    reason: str = ""
    retry_at: float | None = None  # throttled: no call before this time
    where: str = ""  # throttled: which call was


@dataclass(frozen=True)
class Reading(Generic[T]):
    """What a probe reports on: a document (perhaps an older one, see ``note``) or a reason."""

    document: T | None
    at: float
    note: str = ""
    reason: str = ""


class VendorCache:
    """Tokens, documents, throttling and api-versions shared by all vendor checks."""

    def __init__(self) -> None:
        self.tokens: dict[tuple[str, ...], _Token] = {}
        self.fetched: dict[Hashable, Fetched[Any]] = {}
        self.last_good: dict[Hashable, Fetched[Any]] = {}
        self.not_before: dict[Hashable, tuple[float, str]] = {}
        self.api_versions: dict[Hashable, str] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def lock(self, key: Hashable) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())


def vendor_cache(ctx: ProbeContext) -> VendorCache:
    cache = ctx.cache.get(CACHE_KEY)
    if not isinstance(cache, VendorCache):
        cache = ctx.cache[CACHE_KEY] = VendorCache()
    return cache


async def read_shared(
    ctx: ProbeContext,
    key: Hashable,
    fetch: Callable[[], Awaitable[T]],
    reuse_within: float,
    max_stale: float,
) -> Reading[T]:
    """The document under ``key``: shared if read recently, else read now (one reader at a time)."""
    cache = vendor_cache(ctx)
    async with cache.lock(key):
        now = ctx.wall()
        entry: Fetched[T] | None = cache.fetched.get(key)
        if entry is None or now - entry.at >= _fresh_for(entry, reuse_within):
            entry = await _fetch_now(cache, key, fetch, now)
            cache.fetched[key] = entry
    if entry.document is not None:
        return Reading(entry.document, entry.at)
    reason = entry.reason
    if entry.retry_at is not None:
        wait = max(1, math.ceil(entry.retry_at - now))
        reason = f"{entry.where}: throttled (429), retry after {wait} s"
        last: Fetched[T] | None = cache.last_good.get(key)
        if last is not None and now - last.at <= max_stale:
            shown = datetime.fromtimestamp(last.at, UTC).strftime("%H:%M UTC")
            return Reading(
                last.document, last.at, note=f"{reason}; showing vendor state from {shown}"
            )
    return Reading(None, entry.at, reason=reason)


def _fresh_for(entry: Fetched[Any], reuse_within: float) -> float:
    return reuse_within if entry.document is not None else min(reuse_within, FAILURE_REUSE)


async def _fetch_now(
    cache: VendorCache, key: Hashable, fetch: Callable[[], Awaitable[T]], now: float
) -> Fetched[T]:
    not_before, where = cache.not_before.get(key, (0.0, ""))
    if now < not_before:
        return Fetched(now, retry_at=not_before, where=where)
    try:
        document = await fetch()
    except Throttled as exc:
        retry_at = now + exc.retry_after
        cache.not_before[key] = (retry_at, exc.where)
        log.warning(
            "event=vendor_api_throttled api=%r retry_after=%d action=%s",
            exc.where,
            math.ceil(exc.retry_after),
            "no calls until then; lengthen the check interval if this repeats",
        )
        return Fetched(now, retry_at=retry_at, where=exc.where)
    except VendorApiError as exc:
        return Fetched(now, reason=exc.reason)
    entry = Fetched(now, document)
    cache.last_good[key] = entry
    return entry


class VendorApi:
    """Authorized JSON GETs against one vendor API with one app's client credentials."""

    def __init__(self, ctx: ProbeContext, credentials: Credentials, permission_hint: str) -> None:
        self._ctx = ctx
        self._cache = vendor_cache(ctx)
        self._credentials = credentials
        self._permission_hint = permission_hint
        self.pages = 0

    async def collect(
        self,
        url: str,
        where: str,
        link_field: str,
        max_pages: int,
        headers: dict[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Every item of a paged ``value`` list, and whether ``max_pages`` cut it short
        (``headers``, e.g. ``Prefer: odata.maxpagesize``, go with every page's request)."""
        items: list[dict[str, Any]] = []
        origin = URL(url).origin()
        for _ in range(max_pages):
            document = await self.get(url, where, headers)
            value = document.get("value")
            if not isinstance(value, list):
                raise VendorApiError(
                    f"{where}: vendor API returned unexpected JSON (no value list)"
                )
            items.extend(item for item in value if isinstance(item, dict))
            link = document.get(link_field)
            if not isinstance(link, str) or not link:
                return items, False
            if URL(link).origin() != origin:  # the bearer token goes to the API's host only
                raise VendorApiError(f"{where}: next page link points to another host")
            url = link
        return items, True

    async def get(
        self, url: str, where: str, extra: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """A JSON object from an encoded ``url``; else VendorApiError, Throttled, RequestRefused."""
        token, cached = await self._token()
        status, headers, body = await self._request(url, token, where, extra)
        if status == 401 and cached:
            # A cached token can be expired or revoked early (clock skew, secret rotated):
            # drop it and sign in once more before calling the token rejected.
            if self._cache.tokens.get(self._credentials.key) is token:
                del self._cache.tokens[self._credentials.key]
            token, _ = await self._token()
            status, headers, body = await self._request(url, token, where, extra)
        self.pages += 1
        return self._document(status, headers, body, where)

    async def _request(
        self, url: str, token: _Token, where: str, extra: dict[str, str] | None = None
    ) -> tuple[int, Headers, bytes]:
        headers = {**(extra or {}), "Accept": "application/json"}
        headers["Authorization"] = f"Bearer {token.value}"
        try:
            async with self._ctx.http.get(
                URL(url, encoded=True),  # built encoded, and next links arrive encoded
                headers=headers,
                allow_redirects=False,
            ) as response:
                return response.status, CIMultiDict(response.headers), await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise VendorApiError(f"{where}: {self._redact(describe_error(exc))}") from None

    def _document(self, status: int, headers: Headers, body: bytes, where: str) -> dict[str, Any]:
        try:
            document = json.loads(body)
        except ValueError:  # also bytes that are not UTF-8
            document = None
            if 200 <= status < 300:
                raise VendorApiError(f"{where}: vendor API returned malformed JSON") from None
        if 200 <= status < 300:
            if not isinstance(document, dict):
                raise VendorApiError(
                    f"{where}: vendor API returned unexpected JSON (not an object)"
                )
            return document
        code, message = _error(document)
        shown = f": {code}" if code else ""
        if status == 401:
            raise VendorApiError(f"{where}: token rejected (401){shown}")
        if status == 403:
            raise VendorApiError(f"{where}: access denied (403){shown}; {self._permission_hint}")
        if status == 429:
            raise Throttled(where, self._retry_after(headers))
        if status in (400, 404):
            raise RequestRefused(where, status, code, message)
        raise VendorApiError(f"{where}: status {status}{shown}")

    async def _token(self) -> tuple[_Token, bool]:
        """A usable access token and whether it came from the cache."""
        key = self._credentials.key
        async with self._cache.lock(("token", *key)):
            cached = self._cache.tokens.get(key)
            if cached is not None and self._ctx.wall() < cached.use_until:
                return cached, True
            token = await self._sign_in()
            self._cache.tokens[key] = token
            return token, False

    async def _sign_in(self) -> _Token:
        creds = self._credentials
        url = token_url(creds.authority, creds.tenant)
        form = client_credentials_form(
            creds.client_id, creds.client_secret.get_secret_value(), creds.scope
        )
        try:
            # No redirects: following one would re-post the secret to wherever it points.
            async with self._ctx.http.post(
                url, data=form, allow_redirects=False, headers={"Accept": "application/json"}
            ) as response:
                status, headers = response.status, CIMultiDict(response.headers)
                body = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise VendorApiError(f"sign-in: {self._redact(describe_error(exc))}") from None
        if status == 429:
            raise Throttled("sign-in", self._retry_after(headers))
        answer = read_answer(status, body)
        if status != 200:
            raise VendorApiError(f"sign-in failed: status {status}{answer.error}")
        if answer.access_token is None:
            raise VendorApiError("sign-in failed: no access_token in the response")
        lifetime = DEFAULT_TOKEN_LIFETIME if answer.expires_in is None else answer.expires_in
        return _Token(answer.access_token, self._ctx.wall() + lifetime - TOKEN_MARGIN)

    def _retry_after(self, headers: Headers) -> float:
        seconds = retry_after_header(headers, self._ctx.wall(), limit=MAX_RETRY_AFTER)
        return max(DEFAULT_RETRY_AFTER if seconds is None else seconds, 1.0)

    def _redact(self, reason: str) -> str:
        secret = self._credentials.client_secret.get_secret_value()
        return reason.replace(secret, "***") if secret else reason


class ApiVersions:
    """Tries ARM api-versions in order, starting with the one that worked last time."""

    def __init__(self, ctx: ProbeContext, key: Hashable, versions: list[str]) -> None:
        self._cache = vendor_cache(ctx)
        self._key = key
        known = self._cache.api_versions.get(key)
        self._candidates = list(dict.fromkeys([known, *versions] if known else versions))

    async def call(self, request: Callable[[str], Awaitable[T]], where: str) -> T:
        for version in self._candidates:
            try:
                result = await request(version)
            except RequestRefused as exc:
                if exc.code.lower() not in VERSION_ERRORS:
                    raise
                log.info("event=vendor_api_version_refused api=%r api_version=%s", where, version)
                continue
            self._cache.api_versions[self._key] = version
            self._candidates = [version]  # the rest of this read uses it directly
            return result
        tried = ", ".join(self._candidates)
        raise VendorApiError(f"{where}: no api-version accepted (tried {tried})")


def _error(document: object) -> tuple[str, str]:
    """(code, message) of a Graph or ARM error body ``{"error": {"code", "message"}}``."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) and _CODE.fullmatch(code) else "",
        message if isinstance(message, str) else "",
    )
