"""The m365_health check against Microsoft Graph service communications, mocked with aioresponses.

Payloads follow the Graph v1.0 docs (serviceHealth, serviceHealthIssue with posts),
with the PascalCase values Graph's own samples return mixed with documented camelCase.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import ValidationError
from yarl import URL

import checks
from checks.m365_health import Options, probe
from checks.vendor_common import VendorStatus, graph_state
from monitor.probe import ProbeContext, ProbeResult, Target
from monitor.runner import run_probe
from tests.conftest import FakeClock

TARGET = Target("contoso", "m365-vendor-status", "graph", "m365_health")
TENANT = "contoso.partner.onmschina.cn"
CLIENT_ID = "3f1c0d7e-5a2b-4c8e-9d6f-0123456789ab"
SECRET = "Xq8~graph.SECRET_do-not-leak"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.first-token.sig"
TOKEN_2 = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.second-token.sig"
TOKEN_URL = f"https://login.chinacloudapi.cn/{TENANT}/oauth2/v2.0/token"
GRAPH = "https://microsoftgraph.chinacloudapi.cn/v1.0"
OVERVIEWS = f"{GRAPH}/admin/serviceAnnouncement/healthOverviews"
ISSUES = f"{GRAPH}/admin/serviceAnnouncement/issues?$filter=isResolved%20eq%20false"
NOW = 1_763_884_800.0  # 2025-11-23 08:00:00 UTC
MAPPING = {
    "Exchange": "exchange-online",
    "Exchange Online": "exchange-online",
    "SharePoint": "sharepoint-online",
    "microsoftteams": "microsoft-teams",
    "INTUNE": "intune",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def ctx(probe_ctx: ProbeContext, clock: FakeClock) -> ProbeContext:
    return ProbeContext(http=probe_ctx.http, timeout=5.0, wall=clock)


def options(**changes: Any) -> Options:
    values: dict[str, Any] = {
        "tenant": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "services": MAPPING,
    }
    return Options(**(values | changes))


def token_reply(mock: aioresponses, token: str = TOKEN, expires_in: int = 3599) -> None:
    mock.post(
        TOKEN_URL,
        payload={
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        },
    )


def graph_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2025-11-23T08:00:00",
                "request-id": "5b8c1f0e-2d3a-4e5f-8a9b-0c1d2e3f4a5b",
                "client-request-id": "5b8c1f0e-2d3a-4e5f-8a9b-0c1d2e3f4a5b",
            },
        }
    }


def overview(service_id: str, name: str, status: str) -> dict[str, Any]:
    return {"service": name, "status": status, "id": service_id}


def issue(
    issue_id: str,
    service: str,
    status: str,
    classification: str = "Incident",
    resolved: bool = False,
    posts: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    return {
        "startDateTime": "2025-11-23T06:30:00Z",
        "endDateTime": None,
        "lastModifiedDateTime": "2025-11-23T07:45:12.767Z",
        "title": f"{service}: users may be unable to connect ({issue_id})",
        "id": issue_id,
        "impactDescription": f"Users may be unable to use {service}.",
        "classification": classification,
        "origin": "Microsoft",
        "status": status,
        "service": service,
        "feature": "Connectivity",
        "featureGroup": "Service availability",
        "isResolved": resolved,
        "details": [{"name": "NotifyInApp", "value": "True"}],
        "posts": [
            {
                "createdDateTime": created,
                "postType": "Regular",
                "description": {"contentType": "Html", "content": content},
            }
            for created, content in posts
        ],
    }


EXCHANGE_INCIDENT = issue(
    "EX226792",
    "Exchange Online",
    "ServiceDegradation",
    posts=[
        ("2025-11-23T06:40:00Z", "Title: Some users cannot send mail<br>User impact: delays."),
        (
            "2025-11-23T07:40:00Z",
            "<p>Title: Some users cannot send mail</p><p>Current status: we&#39;re "
            "rerouting traffic&nbsp;to <b>healthy</b> infrastructure.</p>",
        ),
    ],
)
OVERVIEW_PAGES = [
    {
        "@odata.context": f"{GRAPH}/$metadata#admin/serviceAnnouncement/healthOverviews",
        "@odata.nextLink": f"{OVERVIEWS}?$skiptoken=MSZ4",
        "value": [
            overview("Exchange", "Exchange Online", "ServiceDegradation"),
            overview("microsoftteams", "Microsoft Teams", "serviceInterruption"),
        ],
    },
    {
        "@odata.context": f"{GRAPH}/$metadata#admin/serviceAnnouncement/healthOverviews",
        "value": [
            overview("SharePoint", "SharePoint Online", "serviceOperational"),
            overview("OrgLiveID", "Microsoft Entra", "ServiceOperational"),
            overview("Intune", "Microsoft Intune", "Investigating"),
        ],
    },
]
ISSUE_PAGES = [
    {
        "@odata.context": f"{GRAPH}/$metadata#admin/serviceAnnouncement/issues",
        "@odata.nextLink": f"{ISSUES}&$skip=100",
        "value": [
            issue("EX226800", "Exchange Online", "serviceDegradation", "Advisory"),
            EXCHANGE_INCIDENT,
        ],
    },
    {
        "@odata.context": f"{GRAPH}/$metadata#admin/serviceAnnouncement/issues",
        "value": [
            issue("TM512345", "Microsoft Teams", "ServiceInterruption", "incident"),
            issue("SP498765", "SharePoint Online", "investigating", "Advisory"),
            # Resolved: a cloud that ignores $filter sends it anyway; it must not count.
            issue("SP490001", "SharePoint Online", "ServiceRestored", resolved=True),
        ],
    },
]


def graph_replies(mock: aioresponses) -> None:
    """One complete, healthy read: two pages of overviews, two pages of issues."""
    mock.get(OVERVIEWS, payload=OVERVIEW_PAGES[0])
    mock.get(f"{OVERVIEWS}?$skiptoken=MSZ4", payload=OVERVIEW_PAGES[1])
    mock.get(ISSUES, payload=ISSUE_PAGES[0])
    mock.get(f"{ISSUES}&$skip=100", payload=ISSUE_PAGES[1])


def calls(mock: aioresponses, method: str, url: str) -> list[dict[str, Any]]:
    """Keyword arguments of every request to ``url`` (query included)."""
    wanted = URL(url)
    found = []
    for (called_method, called_url), requests in mock.requests.items():
        if called_method == method and called_url == wanted:
            found += [request.kwargs for request in requests]
    return found


def graph_calls(mock: aioresponses) -> int:
    return sum(
        len(requests)
        for (method, url), requests in mock.requests.items()
        if method == "GET" and url.host == "microsoftgraph.chinacloudapi.cn"
    )


def by_service(result: ProbeResult) -> dict[str, VendorStatus]:
    assert result.vendor is not None
    return {status.service: status for status in result.vendor}


def assert_secret_free(result: ProbeResult, caplog: pytest.LogCaptureFixture) -> None:
    shown = [result.reason, repr(result), str(result.facts), caplog.text]
    shown += [str(status.to_json()) for status in result.vendor or []]
    for text in shown:
        assert SECRET not in text and TOKEN not in text and TOKEN_2 not in text


# ------------------------------------------------------------------------------ reading


async def test_reads_every_mapped_service(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_reply(mock)
    graph_replies(mock)

    result = await probe(TARGET, options(), ctx)

    assert result.success
    services = by_service(result)
    assert list(services) == ["exchange-online", "sharepoint-online", "microsoft-teams", "intune"]
    exchange = services["exchange-online"]
    assert exchange == VendorStatus(
        service="exchange-online",
        source="m365",
        status="degraded",
        vendor_status="ServiceDegradation",
        issue_id="EX226792",  # the incident, not the advisory on the same service
        title="Exchange Online: users may be unable to connect (EX226792)",
        latest_post="Title: Some users cannot send mail Current status: we're rerouting "
        "traffic to healthy infrastructure.",
        classification="incident",
        start=NOW - 5400,
        planned_maintenance=False,
    )
    teams = services["microsoft-teams"]
    assert (teams.status, teams.vendor_status, teams.issue_id) == (
        "down",
        "serviceInterruption",
        "TM512345",
    )
    sharepoint = services["sharepoint-online"]  # operational, with an advisory attached
    assert (sharepoint.status, sharepoint.issue_id, sharepoint.classification) == (
        "up",
        "SP498765",
        "advisory",
    )
    assert sharepoint.latest_post == "Users may be unable to use SharePoint Online."  # no posts
    intune = services["intune"]  # investigating: degraded, with the vendor's word
    assert (intune.status, intune.vendor_status, intune.issue_id) == (
        "degraded",
        "Investigating",
        None,
    )
    assert result.facts == {
        "vendor_services_impaired": 3.0,
        "vendor_issues_active": 4.0,  # resolved SP490001 and unmapped services do not count
        "vendor_api_pages": 4.0,
        "vendor_state_age_seconds": 0.0,
    }
    assert "exchange-online degraded (ServiceDegradation, EX226792)" in result.reason
    assert "microsoft-teams down (serviceInterruption, TM512345)" in result.reason
    [sign_in] = calls(mock, "POST", TOKEN_URL)
    assert sign_in["data"] == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "scope": "https://microsoftgraph.chinacloudapi.cn/.default",
    }
    [read] = calls(mock, "GET", OVERVIEWS)
    assert read["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert exchange.to_json()["issue_id"] == "EX226792"
    assert_secret_free(result, caplog)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("serviceInterruption", "down"),
        ("ServiceInterruption", "down"),
        ("serviceDegradation", "degraded"),
        ("EXTENDEDRECOVERY", "degraded"),
        ("investigating", "degraded"),
        ("RestoringService", "degraded"),
        ("verifyingService", "degraded"),
        ("investigationSuspended", "degraded"),
        ("serviceOperational", "up"),
        ("ServiceRestored", "up"),
        ("falsePositive", "up"),
        ("PostIncidentReviewPublished", "up"),
        ("resolved", "up"),
        ("unknownFutureValue", "unknown"),
        ("somethingNew", "unknown"),
        (None, "unknown"),
    ],
)
def test_status_words_case_insensitive(word: str | None, state: str) -> None:
    assert graph_state(word) == state


async def test_long_post_is_cut(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    mock.get(
        OVERVIEWS, payload={"value": [overview("Exchange", "Exchange Online", "Investigating")]}
    )
    long_post = "<div>" + "Mail flow is delayed for some users. " * 20 + "</div>"
    mock.get(
        ISSUES,
        payload={
            "value": [issue("EX1", "Exchange Online", "investigating", posts=[("", long_post)])]
        },
    )

    result = await probe(TARGET, options(services={"Exchange": "exchange-online"}), ctx)

    post = by_service(result)["exchange-online"].latest_post
    assert post is not None and len(post) <= 300 and post.endswith("…")
    assert post.startswith("Mail flow is delayed for some users.")


async def test_without_issues(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    mock.get(OVERVIEWS, payload=OVERVIEW_PAGES[0])
    mock.get(f"{OVERVIEWS}?$skiptoken=MSZ4", payload=OVERVIEW_PAGES[1])

    result = await probe(TARGET, options(include_issues=False), ctx)

    assert result.success
    assert by_service(result)["exchange-online"].issue_id is None
    assert calls(mock, "GET", ISSUES) == []
    assert result.facts["vendor_api_pages"] == 2.0


async def test_service_graph_does_not_list(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    mock.get(OVERVIEWS, payload={"value": [overview("Exchange", "Exchange Online", "ok?")]})
    mock.get(ISSUES, payload={"value": []})

    result = await probe(
        TARGET, options(services={"Exchange": "exchange-online", "Yammer": "yammer"}), ctx
    )

    assert result.success
    services = by_service(result)
    assert services["exchange-online"].status == "unknown"  # a word Graph never documented
    assert services["exchange-online"].vendor_status == "ok?"
    assert services["yammer"].status == "unknown"
    assert result.reason == "Graph does not list Yammer for this tenant"


# ------------------------------------------------------------------------ request budget


async def test_one_sign_in_and_one_read_per_tenant(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses
) -> None:
    token_reply(mock)
    graph_replies(mock)
    # A second check for the same tenant (another catalog service, its own context object
    # sharing the daemon's cache) probed at the same moment.
    other_ctx = ProbeContext(http=ctx.http, timeout=5.0, wall=clock, cache=ctx.cache)
    other = options(services={"SharePoint Online": "sharepoint-online"})

    first, second = await asyncio.gather(
        probe(TARGET, options(), ctx), probe(TARGET, other, other_ctx)
    )

    assert first.success and second.success
    assert len(calls(mock, "POST", TOKEN_URL)) == 1
    assert graph_calls(mock) == 4  # the four pages, read once
    assert [s.service for s in second.vendor or []] == ["sharepoint-online"]

    clock.now += 60  # next interval: read again, with the cached token
    graph_replies(mock)
    third = await probe(TARGET, options(), ctx)
    assert third.success and graph_calls(mock) == 8
    assert len(calls(mock, "POST", TOKEN_URL)) == 1

    clock.now += 3600  # the token expired (and was dropped 60 s before): sign in again
    token_reply(mock, TOKEN_2)
    graph_replies(mock)
    fourth = await probe(TARGET, options(), ctx)
    assert fourth.success
    assert len(calls(mock, "POST", TOKEN_URL)) == 2
    latest = calls(mock, "GET", OVERVIEWS)[-1]
    assert latest["headers"]["Authorization"] == f"Bearer {TOKEN_2}"


async def test_a_failure_is_shared_only_briefly(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses
) -> None:
    token_reply(mock)
    mock.get(OVERVIEWS, status=503, payload=graph_error("ServiceUnavailable", "Try later."))
    first, second = await asyncio.gather(
        probe(TARGET, options(), ctx), probe(TARGET, options(), ctx)
    )
    assert first.reason == second.reason == "Graph healthOverviews: status 503: ServiceUnavailable"
    assert graph_calls(mock) == 1  # concurrent checks of the tenant share the failed read

    clock.now += 10  # the daemon re-probes a failing check quickly: that asks Graph again
    graph_replies(mock)
    result = await probe(TARGET, options(), ctx)
    assert result.success and graph_calls(mock) == 5


async def test_expired_cached_token_is_renewed_once(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    token_reply(mock)
    graph_replies(mock)
    assert (await probe(TARGET, options(), ctx)).success

    clock.now += 60
    expired = graph_error("InvalidAuthenticationToken", "Access token has expired or is not valid.")
    mock.get(OVERVIEWS, status=401, payload=expired)
    token_reply(mock, TOKEN_2)
    graph_replies(mock)

    result = await probe(TARGET, options(), ctx)

    assert result.success, result.reason
    assert len(calls(mock, "POST", TOKEN_URL)) == 2
    tokens = [c["headers"]["Authorization"] for c in calls(mock, "GET", OVERVIEWS)]
    assert tokens == [f"Bearer {TOKEN}", f"Bearer {TOKEN}", f"Bearer {TOKEN_2}"]
    assert_secret_free(result, caplog)


async def test_fresh_token_rejected(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_reply(mock)
    mock.get(
        OVERVIEWS,
        status=401,
        payload=graph_error("InvalidAuthenticationToken", "Access token validation failure."),
    )

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert (
        result.reason == "Graph healthOverviews: token rejected (401): InvalidAuthenticationToken"
    )
    assert len(calls(mock, "POST", TOKEN_URL)) == 1  # a token just issued is not retried
    # The vendor API failing says nothing about the services: unknown, never down.
    assert {s.status for s in result.vendor or []} == {"unknown"}
    assert set(by_service(result)) == set(MAPPING.values())
    assert_secret_free(result, caplog)


async def test_cached_token_rejected_twice(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses
) -> None:
    token_reply(mock)
    graph_replies(mock)
    await probe(TARGET, options(), ctx)
    clock.now += 60
    token_reply(mock, TOKEN_2)
    rejected = graph_error("InvalidAuthenticationToken", "Access token validation failure.")
    mock.get(OVERVIEWS, status=401, payload=rejected)
    mock.get(OVERVIEWS, status=401, payload=rejected)

    result = await probe(TARGET, options(), ctx)

    assert (
        result.reason == "Graph healthOverviews: token rejected (401): InvalidAuthenticationToken"
    )
    assert len(calls(mock, "POST", TOKEN_URL)) == 2  # one retry, no loop


async def test_throttled_without_earlier_state(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    token_reply(mock)
    too_many = graph_error("TooManyRequests", "Too many requests.")
    mock.get(OVERVIEWS, status=429, payload=too_many, headers={"Retry-After": "120"})

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert result.reason == "Graph healthOverviews: throttled (429), retry after 120 s"
    assert "event=vendor_api_throttled" in caplog.text

    clock.now += 60  # still inside Retry-After: no call at all
    result = await probe(TARGET, options(), ctx)
    assert result.reason == "Graph healthOverviews: throttled (429), retry after 60 s"
    assert graph_calls(mock) == 1

    clock.now += 61
    graph_replies(mock)
    result = await probe(TARGET, options(), ctx)
    assert result.success and graph_calls(mock) == 5
    assert_secret_free(result, caplog)


async def test_throttled_shows_last_state_read(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses
) -> None:
    token_reply(mock)
    graph_replies(mock)
    before = await probe(TARGET, options(), ctx)

    clock.now += 60
    mock.get(
        OVERVIEWS,
        status=429,
        payload=graph_error("TooManyRequests", "Too many requests."),
        headers={"Retry-After": "Sun, 23 Nov 2025 08:01:30 GMT"},  # HTTP-date: 30 s from now
    )
    result = await probe(TARGET, options(), ctx)

    assert result.success  # the vendor's state from a minute ago, said to be that old
    assert result.vendor == before.vendor
    assert result.reason.endswith(
        "Graph healthOverviews: throttled (429), retry after 30 s; "
        "showing vendor state from 08:00 UTC"
    )
    assert result.facts["vendor_state_age_seconds"] == 60.0

    clock.now += 1000  # older than max_stale (15 min): no longer vouched for
    mock.get(OVERVIEWS, status=429, payload={}, headers={"Retry-After": "30"})
    result = await probe(TARGET, options(), ctx)
    assert not result.success
    assert result.reason == "Graph healthOverviews: throttled (429), retry after 30 s"


# --------------------------------------------------------------------------- failures


async def test_endpoint_the_cloud_does_not_serve(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    token_reply(mock)
    segment = graph_error("BadRequest", "Resource not found for the segment 'serviceAnnouncement'.")
    mock.get(OVERVIEWS, status=400, payload=segment)
    mock.get(ISSUES, payload=ISSUE_PAGES[1])

    # Without the overviews, Graph ids cannot be linked to the names issues carry:
    # only keys written as display names find their issues.
    mapping = {"Microsoft Teams": "microsoft-teams", "Exchange": "exchange-online"}

    result = await probe(TARGET, options(services=mapping), ctx)

    assert result.success  # unsupported in this cloud is not an outage
    assert "Graph healthOverviews: unsupported in this cloud" in result.reason
    services = by_service(result)
    assert {s.status for s in services.values()} == {"unsupported"}
    assert services["microsoft-teams"].issue_id == "TM512345"  # issues still shown
    assert services["exchange-online"].issue_id is None
    assert result.facts["vendor_services_impaired"] == 0.0
    assert_secret_free(result, caplog)


async def test_issues_the_cloud_does_not_serve(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    mock.get(OVERVIEWS, payload=OVERVIEW_PAGES[0])
    mock.get(f"{OVERVIEWS}?$skiptoken=MSZ4", payload=OVERVIEW_PAGES[1])
    segment = graph_error("BadRequest", "Resource not found for the segment 'issues'.")
    mock.get(ISSUES, status=400, payload=segment)

    result = await probe(TARGET, options(), ctx)

    assert result.success
    assert result.reason.endswith("Graph issues: unsupported in this cloud")
    assert by_service(result)["exchange-online"].status == "degraded"
    assert result.facts["vendor_issues_active"] == 0.0


async def test_other_bad_request_fails(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    graph_replies_overviews_only = OVERVIEW_PAGES[1]
    mock.get(OVERVIEWS, payload=graph_replies_overviews_only)
    mock.get(ISSUES, status=400, payload=graph_error("BadRequest", "Invalid filter clause"))

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert result.reason == "Graph issues: status 400: BadRequest"


async def test_malformed_json(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    token_reply(mock)
    mock.get(
        OVERVIEWS, body='{"value": [{"id": "Exchange", "status": ', content_type="application/json"
    )

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert result.reason == "Graph healthOverviews: vendor API returned malformed JSON"
    assert {s.status for s in result.vendor or []} == {"unknown"}
    assert_secret_free(result, caplog)


async def test_sign_in_fails(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mock.post(
        TOKEN_URL,
        status=401,
        payload={
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the "
            f"secret being sent in the request is the client secret value ({SECRET[:4]}…).",
            "error_codes": [7000215],
        },
    )

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert result.reason == "sign-in failed: status 401: invalid_client (AADSTS7000215)"
    assert graph_calls(mock) == 0
    assert_secret_free(result, caplog)


async def test_sign_in_without_a_token(ctx: ProbeContext, mock: aioresponses) -> None:
    mock.post(TOKEN_URL, payload={"token_type": "Bearer", "expires_in": 3599})

    result = await probe(TARGET, options(), ctx)

    assert result.reason == "sign-in failed: no access_token in the response"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            {"status": 403, "payload": graph_error("Forbidden", "Insufficient privileges.")},
            "Graph healthOverviews: access denied (403): Forbidden; "
            "grant the app ServiceHealth.Read.All (application)",
        ),
        (
            {
                "status": 503,
                "body": "<html>Service Unavailable</html>",
                "content_type": "text/html",
            },
            "Graph healthOverviews: status 503",
        ),
        (
            {"exception": aiohttp.ServerDisconnectedError()},
            "Graph healthOverviews: ServerDisconnectedError: Server disconnected",
        ),
        (
            {"payload": ["not", "an", "object"]},
            "Graph healthOverviews: vendor API returned unexpected JSON (not an object)",
        ),
        (
            {"payload": {"error": "no value here"}},
            "Graph healthOverviews: vendor API returned unexpected JSON (no value list)",
        ),
    ],
)
async def test_graph_failures(
    ctx: ProbeContext,
    mock: aioresponses,
    caplog: pytest.LogCaptureFixture,
    reply: dict[str, Any],
    reason: str,
) -> None:
    token_reply(mock)
    mock.get(OVERVIEWS, **reply)

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert result.reason == reason
    assert_secret_free(result, caplog)


async def test_paging_is_bounded(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    for page in range(3):  # Graph would go on: every page links to another
        mock.get(
            f"{OVERVIEWS}?$skiptoken={page}" if page else OVERVIEWS,
            payload={
                "@odata.nextLink": f"{OVERVIEWS}?$skiptoken={page + 1}",
                "value": [overview("Exchange", "Exchange Online", "serviceOperational")],
            },
        )

    opts = options(services={"Exchange": "exchange-online"}, include_issues=False, max_pages=2)
    result = await probe(TARGET, opts, ctx)

    assert result.success
    assert result.reason == "Graph healthOverviews: more than 2 pages"
    assert graph_calls(mock) == 2


async def test_next_link_to_another_host_is_not_followed(
    ctx: ProbeContext, mock: aioresponses
) -> None:
    token_reply(mock)
    mock.get(
        OVERVIEWS,
        payload={"@odata.nextLink": "https://graph.example.net/v1.0/next", "value": []},
    )

    result = await probe(TARGET, options(include_issues=False), ctx)

    assert result.reason == "Graph healthOverviews: next page link points to another host"
    assert graph_calls(mock) == 1


# ------------------------------------------------------------------------- registration


async def test_registered_and_run_by_the_runner(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    check_type = checks.check_types()["m365_health"]
    assert "vendor_services_impaired" in check_type.metric_help
    opts = check_type.options.model_validate(
        {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": SECRET, "services": MAPPING}
    )
    assert SECRET not in repr(opts)
    token_reply(mock)
    graph_replies(mock)

    result = await run_probe(check_type, TARGET, opts, ctx)

    assert result.success and not result.plugin_error
    assert_secret_free(result, caplog)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"services": {}}, "services"),
        ({"services": {"Exchange": "Exchange Online"}}, "services.Exchange"),
        ({"tenant": "contoso/evil"}, "tenant"),
        ({"graph_base": "microsoftgraph.chinacloudapi.cn"}, "graph_base"),
        ({"reuse_within": "soon"}, "reuse_within"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_options(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        options(**change)
    assert field in {".".join(map(str, error["loc"])) for error in caught.value.errors()}


def test_durations_accept_config_syntax() -> None:
    opts = options(reuse_within="4m30s", max_stale="1h")
    assert (opts.reuse_within, opts.max_stale) == (270.0, 3600.0)
