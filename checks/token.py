"""``token``: sign in as an application, the way a customer's service would.

The "account sign-in" support case: an OAuth2 client-credentials request to a
tenant's token endpoint on Azure operated by 21Vianet
(``https://login.chinacloudapi.cn/{tenant}/oauth2/v2.0/token``). It fails on an
expired or wrong client secret, a deleted app registration or a sign-in outage,
and the reason carries the OAuth ``error`` and the AADSTS code the operator can
look up ("status 401: invalid_client (AADSTS7000215)"). The secret and the
issued token never leave this module.

Phases: ``response`` (until the response headers, connect and TLS included:
the shared HTTP session has no per-request tracing) and ``transfer`` (the body).
"""

from __future__ import annotations

import aiohttp
from pydantic import Field, SecretStr, model_validator

from checks.azure_oauth import TokenAnswer, client_credentials_form, read_answer, token_url
from monitor.probe import (
    CheckOptions,
    ProbeContext,
    ProbeResult,
    Target,
    describe_error,
    failure,
)

METRIC_HELP = {
    # Word for word the http check's text: the metric has one HELP line, whoever sets it.
    "http_status_code": "HTTP status code of the final response",
    "token_expires_in": "Lifetime in seconds of the access token the endpoint issued",
}


class Options(CheckOptions):
    token_url: str | None = Field(
        None, pattern=r"^https?://", description="Full token endpoint URL (instead of tenant)"
    )
    authority: str = Field(
        "https://login.chinacloudapi.cn",
        pattern=r"^https?://[^/]+(/[^?#]*)?$",
        description="Sign-in host the token URL is built from with tenant",
    )
    tenant: str | None = Field(
        None,
        pattern=r"^[^/?#\s]+$",  # one path segment; config placeholders must still pass
        description="Tenant ID or domain, e.g. contoso.partner.onmschina.cn",
    )
    client_id: str = Field(min_length=1, description="Application (client) ID")
    client_secret: SecretStr = Field(
        min_length=1, description="Client secret value (not the secret ID)"
    )
    scope: str = Field(
        "https://microsoftgraph.chinacloudapi.cn/.default",
        description="Scope requested; '<resource>/.default' for client credentials",
    )
    tls_verify: bool = Field(True, description="Verify the server certificate and host name")
    ca_file: str | None = Field(
        None, description="PEM bundle of CAs to trust instead of the system's"
    )

    @model_validator(mode="after")
    def _one_endpoint(self) -> Options:
        if self.token_url is None and self.tenant is None:
            raise ValueError("either token_url or tenant is required")
        if self.token_url is not None and {"tenant", "authority"} & self.model_fields_set:
            raise ValueError("token_url is the whole URL: give it or authority + tenant, not both")
        return self

    @property
    def endpoint(self) -> str:
        """The token endpoint URL this check posts to."""
        if self.token_url is not None:
            return self.token_url
        return token_url(self.authority, self.tenant or "")


async def probe(target: Target, opts: Options, ctx: ProbeContext) -> ProbeResult:
    started = ctx.monotonic()
    url = opts.endpoint
    secret = opts.client_secret.get_secret_value()
    form = client_credentials_form(opts.client_id, secret, opts.scope)
    ssl_context = (
        ctx.ssl_context(opts.tls_verify, opts.ca_file) if url.startswith("https") else True
    )
    try:
        # No redirects: following a 307 would re-post the secret to wherever it points.
        async with ctx.http.post(
            url,
            data=form,
            ssl=ssl_context,
            allow_redirects=False,
            headers={"Accept": "application/json"},
        ) as response:
            answered = ctx.monotonic()
            status = response.status
            body = await response.read()
    except (aiohttp.ClientError, OSError) as exc:
        return failure(_redact(_describe(exc), secret), started, ctx)
    finished = ctx.monotonic()
    phases = {"response": answered - started, "transfer": finished - answered}
    facts = {"http_status_code": float(status)}
    answer = read_answer(status, body)
    reason = _problem(answer)
    if reason is not None:
        result = failure(_redact(reason, secret), started, ctx, **phases)
        result.facts = facts
        return result
    if answer.expires_in is not None:
        facts["token_expires_in"] = answer.expires_in
    return ProbeResult(success=True, duration=finished - started, phases=phases, facts=facts)


def _describe(exc: BaseException) -> str:
    # aiohttp's certificate and TLS errors subclass ssl errors too, and describe_error()
    # takes them for plain ssl ones (no verify_message): hand it the underlying error.
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return describe_error(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return describe_error(exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}"
    return describe_error(exc)


def _problem(answer: TokenAnswer) -> str | None:
    """Why the response is not a usable token, or None when it is one."""
    if answer.status != 200:
        return f"status {answer.status}{answer.error}"
    if not answer.is_json:
        return "status 200 but response is not JSON"
    if answer.access_token is None:
        return f"no access_token in response{answer.error}"
    return None


def _redact(reason: str, secret: str) -> str:
    # Belt and braces: no reason built above quotes the request, but a server or
    # an exception message could echo it back.
    return reason.replace(secret, "***") if secret else reason
