"""The azure_resource_health check against Azure Resource Health, mocked with aioresponses.

Payloads follow the Microsoft.ResourceHealth examples in azure-rest-api-specs
(availabilityStatuses, events with impact / impactedRegions / updates).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aioresponses import aioresponses
from pydantic import ValidationError
from yarl import URL

import checks
from checks.azure_resource_health import Options, _owner, _resource_type, announced_window, probe
from checks.vendor_common import VendorStatus, arm_state
from monitor.probe import ProbeContext, ProbeResult, Target
from tests.conftest import FakeClock

TARGET = Target("contoso", "azure-vendor-status", "resource-health", "azure_resource_health")
TENANT = "contoso.partner.onmschina.cn"
CLIENT_ID = "3f1c0d7e-5a2b-4c8e-9d6f-0123456789ab"
SECRET = "Xq8~arm.SECRET_do-not-leak"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.arm-token.sig"
SUB = "7f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
TOKEN_URL = f"https://login.chinacloudapi.cn/{TENANT}/oauth2/v2.0/token"
ARM = "https://management.chinacloudapi.cn"
HEALTH = f"{ARM}/subscriptions/{SUB}/providers/Microsoft.ResourceHealth"
NOW = 1_763_884_800.0  # 2025-11-23 08:00:00 UTC

VM = f"/subscriptions/{SUB}/resourceGroups/erp-rg/providers/Microsoft.Compute/virtualMachines/vm01"
SHOP_RG = f"/subscriptions/{SUB}/resourceGroups/shop-rg"
WEBAPP = f"{SHOP_RG}/providers/Microsoft.Web/sites/contoso-shop"
DATABASE = f"{SHOP_RG}/providers/Microsoft.Sql/servers/shop-sql/databases/orders"
STORAGE = (
    f"/subscriptions/{SUB}/resourceGroups/misc/providers/Microsoft.Storage/storageAccounts/logs"
)
MAPPING = {
    "Microsoft.Compute/virtualMachines": "erp",
    "Virtual Machines": "erp",
    SHOP_RG: "web-app",
    "App Service": "web-app",
    "key vault": "key-vault",
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def ctx(probe_ctx: ProbeContext, clock: FakeClock) -> ProbeContext:
    return ProbeContext(http=probe_ctx.http, timeout=5.0, wall=clock)


def options(**changes: Any) -> Options:
    values: dict[str, Any] = {
        "subscription_id": SUB,
        "tenant": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "services": MAPPING,
    }
    return Options(**(values | changes))


def token_reply(mock: aioresponses) -> None:
    mock.post(
        TOKEN_URL,
        payload={"token_type": "Bearer", "expires_in": 3599, "access_token": TOKEN},
    )


def arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def availability(resource: str, state: str, summary: str = "", detail: str = "") -> dict[str, Any]:
    return {
        "id": f"{resource}/providers/Microsoft.ResourceHealth/availabilityStatuses/current",
        "name": "current",
        "type": "Microsoft.ResourceHealth/AvailabilityStatuses",
        "location": "chinaeast2",
        "properties": {
            "availabilityState": state,
            "title": state,
            "summary": summary or f"There aren't any known Azure platform problems ({state})",
            "reasonType": "Unplanned" if state != "Available" else "",
            "detailedStatus": detail,
            "occuredTime": "2025-11-23T07:12:00Z",
            "reportedTime": "2025-11-23T07:58:29.7598931Z",
        },
    }


def event(
    tracking_id: str,
    event_type: str,
    service: str,
    status: str = "Active",
    updates: list[tuple[str, str]] = (),  # type: ignore[assignment]
    mitigation: str = "0001-01-01T00:00:00Z",  # ARM's "not set"
) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{SUB}/providers/Microsoft.ResourceHealth/events/{tracking_id}",
        "name": tracking_id,
        "type": "/providers/Microsoft.ResourceHealth/events",
        "properties": {
            "eventType": event_type,
            "eventSource": "ServiceHealth",
            "status": status,
            "title": f"{event_type}: {service} in China East 2",
            "summary": f"<p>An issue with {service} is being investigated.</p>",
            "header": "Your service might have been impacted by an Azure service issue",
            "level": "Warning",
            "eventLevel": "Warning",
            "impactStartTime": "2025-11-23T06:30:00Z",
            "impactMitigationTime": mitigation,
            "impact": [
                {
                    "impactedService": service,
                    "impactedRegions": [
                        {
                            "impactedRegion": "China East 2",
                            "status": status,
                            "impactedSubscriptions": [SUB],
                            "lastUpdateTime": "2025-11-23T07:50:00Z",
                            "updates": [
                                {"summary": summary, "updateDateTime": when}
                                for when, summary in updates
                            ],
                        }
                    ],
                }
            ],
            "isHIR": False,
            "priority": 2,
            "lastUpdateTime": "2025-11-23T07:50:00Z",
        },
    }


STATUS_PAGES = [
    {
        "value": [
            availability(
                VM,
                "Unavailable",
                "We're sorry, your virtual machine isn't available",
                "A hardware problem is preventing us from recovering your virtual machine",
            ),
            availability(WEBAPP, "Available"),
        ],
        "nextLink": f"{HEALTH}/availabilityStatuses?api-version=2022-10-01&$skiptoken=eyJw",
    },
    {
        "value": [
            availability(DATABASE, "Degraded", "Your database is running with reduced capacity"),
            availability(STORAGE, "Available"),  # not mapped: ignored
        ]
    },
]
EVENTS = {
    "value": [
        event(
            "VL3Q-1T8",
            "ServiceIssue",
            "Virtual Machines",
            updates=[
                ("2025-11-23T06:45:00Z", "<p>Engineers are investigating.</p>"),
                ("2025-11-23T07:50:00Z", "<p>A storage scale unit is being <b>recovered</b>.</p>"),
            ],
        ),
        event("4K2M-9PQ", "PlannedMaintenance", "App Service", mitigation="2025-11-23T08:30:00Z"),
        event("ZT6R-0AB", "HealthAdvisory", "Key Vault"),
        event("HX1N-7CD", "HealthAdvisory", "Storage"),  # no catalog service
        event("PR8S-2EF", "ServiceIssue", "App Service", status="Resolved"),
    ]
}


def arm_replies(mock: aioresponses, version: str = "2022-10-01") -> None:
    mock.get(f"{HEALTH}/availabilityStatuses?api-version={version}", payload=STATUS_PAGES[0])
    mock.get(
        f"{HEALTH}/availabilityStatuses?api-version=2022-10-01&$skiptoken=eyJw",
        payload=STATUS_PAGES[1],
    )
    mock.get(f"{HEALTH}/events?api-version=2022-10-01", payload=EVENTS)


def calls(mock: aioresponses, method: str, url: str) -> list[dict[str, Any]]:
    wanted = URL(url)
    return [
        request.kwargs
        for (called_method, called_url), requests in mock.requests.items()
        if called_method == method and called_url == wanted
        for request in requests
    ]


def arm_calls(mock: aioresponses) -> int:
    return sum(
        len(requests)
        for (method, url), requests in mock.requests.items()
        if method == "GET" and url.host == "management.chinacloudapi.cn"
    )


def by_service(result: ProbeResult) -> dict[str, VendorStatus]:
    assert result.vendor is not None
    return {status.service: status for status in result.vendor}


def assert_secret_free(result: ProbeResult, caplog: pytest.LogCaptureFixture) -> None:
    shown = [result.reason, repr(result), str(result.facts), caplog.text]
    shown += [str(status.to_json()) for status in result.vendor or []]
    for text in shown:
        assert SECRET not in text and TOKEN not in text


# ------------------------------------------------------------------------------ reading


async def test_reads_the_whole_subscription(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_reply(mock)
    arm_replies(mock)

    result = await probe(TARGET, options(), ctx)

    assert result.success, result.reason
    services = by_service(result)
    assert list(services) == ["erp", "web-app", "key-vault"]
    assert services["erp"] == VendorStatus(
        service="erp",
        source="azure",
        status="down",
        vendor_status="Unavailable",
        issue_id="VL3Q-1T8",  # the service issue behind it
        title="ServiceIssue: Virtual Machines in China East 2",
        latest_post="A storage scale unit is being recovered.",
        classification="incident",
        start=NOW - 5400,
        planned_maintenance=False,
    )
    web_app = services["web-app"]  # the degraded database is in the shop resource group
    assert (web_app.status, web_app.vendor_status) == ("degraded", "Degraded")
    assert web_app.planned_maintenance
    # the maintenance as announced: 06:30 to 08:30 UTC
    assert (web_app.maintenance_start, web_app.maintenance_end) == (NOW - 5400, NOW + 1800)
    assert (web_app.issue_id, web_app.classification) == ("4K2M-9PQ", "maintenance")
    assert web_app.latest_post == "An issue with App Service is being investigated."
    key_vault = services["key-vault"]  # known only from events: an advisory, still up
    assert (key_vault.status, key_vault.issue_id, key_vault.classification) == (
        "up",
        "ZT6R-0AB",
        "advisory",
    )
    assert result.facts == {
        "vendor_services_impaired": 2.0,
        "vendor_issues_active": 3.0,
        "vendor_api_pages": 3.0,
        "vendor_state_age_seconds": 0.0,
    }
    [sign_in] = calls(mock, "POST", TOKEN_URL)
    assert sign_in["data"]["scope"] == "https://management.chinacloudapi.cn/.default"
    [read] = calls(mock, "GET", f"{HEALTH}/events?api-version=2022-10-01")
    assert read["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert_secret_free(result, caplog)


async def test_service_issue_on_healthy_resources(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    mock.get(
        f"{HEALTH}/availabilityStatuses?api-version=2022-10-01",
        payload={"value": [availability(WEBAPP, "Available")]},
    )
    mock.get(
        f"{HEALTH}/events?api-version=2022-10-01",
        payload={"value": [event("PR8S-2EF", "ServiceIssue", "App Service")]},
    )

    result = await probe(
        TARGET, options(services={SHOP_RG: "web-app", "App Service": "web-app"}), ctx
    )

    [web_app] = result.vendor or []
    assert (web_app.status, web_app.vendor_status, web_app.issue_id) == (
        "degraded",
        "ServiceIssue",
        "PR8S-2EF",
    )


async def test_configured_resources(
    ctx: ProbeContext, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    token_reply(mock)
    mock.get(
        f"{ARM}{VM}/providers/Microsoft.ResourceHealth/availabilityStatuses/current"
        "?api-version=2022-10-01",
        payload=availability(VM, "Degraded", "Your virtual machine is running slowly"),
    )
    mock.get(
        f"{ARM}{WEBAPP}/providers/Microsoft.ResourceHealth/availabilityStatuses/current"
        "?api-version=2022-10-01",
        status=404,
        payload=arm_error(
            "ResourceNotFound",
            "The Resource 'Microsoft.Web/sites/contoso-shop' under resource group 'shop-rg' "
            "was not found.",
        ),
    )
    opts = options(
        resources=[VM, WEBAPP],
        include_events=False,
        services={"Microsoft.Compute/virtualMachines": "erp", "microsoft.web/sites": "web-app"},
    )

    result = await probe(TARGET, opts, ctx)

    assert result.success
    services = by_service(result)
    assert services["erp"].status == "degraded"
    assert services["erp"].title == "Your virtual machine is running slowly"
    assert services["erp"].start == NOW - 2880
    assert (services["web-app"].status, services["web-app"].vendor_status) == (
        "unknown",
        "ResourceNotFound",
    )
    assert "ARM resource not found: contoso-shop" in result.reason
    assert arm_calls(mock) == 2
    assert_secret_free(result, caplog)


async def test_api_version_fallback_is_remembered(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token_reply(mock)
    newest = f"{HEALTH}/availabilityStatuses?api-version=2022-10-01"
    older = f"{HEALTH}/availabilityStatuses?api-version=2020-05-01"
    refused = arm_error(
        "NoRegisteredProviderFound",
        "No registered resource provider found for location 'chinaeast2' and API version "
        "'2022-10-01' for type 'availabilityStatuses'. The supported api-versions are "
        "'2015-01-01, 2017-07-01, 2018-07-01, 2020-05-01'.",
    )
    mock.get(newest, status=400, payload=refused)
    mock.get(older, payload={"value": [availability(VM, "Available")]})
    opts = options(include_events=False)

    result = await probe(TARGET, opts, ctx)

    assert result.success, result.reason
    assert by_service(result)["erp"].status == "up"
    assert "event=vendor_api_version_refused" in caplog.text

    clock.now += 60  # the next read starts with the version that worked
    mock.get(older, payload={"value": [availability(VM, "Degraded")]})
    result = await probe(TARGET, opts, ctx)
    assert by_service(result)["erp"].status == "degraded"
    assert len(calls(mock, "GET", newest)) == 1
    assert len(calls(mock, "GET", older)) == 2


async def test_no_api_version_accepted(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    for version in ("2022-10-01", "2020-05-01", "2018-07-01"):
        mock.get(
            f"{HEALTH}/availabilityStatuses?api-version={version}",
            status=400,
            payload=arm_error(
                "InvalidApiVersionParameter", f"The api-version '{version}' is invalid."
            ),
        )

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert result.reason == (
        "ARM availabilityStatuses: no api-version accepted (tried 2022-10-01, 2020-05-01, "
        "2018-07-01)"
    )
    assert {s.status for s in result.vendor or []} == {"unknown"}


async def test_without_events(ctx: ProbeContext, mock: aioresponses) -> None:
    token_reply(mock)
    mock.get(
        f"{HEALTH}/availabilityStatuses?api-version=2022-10-01",
        payload={"value": [availability(VM, "Available")]},
    )

    result = await probe(TARGET, options(include_events=False), ctx)

    services = by_service(result)
    assert services["erp"].status == "up"
    # Only an event name maps Key Vault, and events were not read: nothing to vouch for.
    assert services["key-vault"].status == "unknown"
    assert "no resource maps to key-vault" in result.reason
    assert calls(mock, "GET", f"{HEALTH}/events?api-version=2022-10-01") == []


# ------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            {
                "status": 429,
                "payload": arm_error("TooManyRequests", "Rate limit exceeded."),
                "headers": {"Retry-After": "17"},
            },
            "ARM availabilityStatuses: throttled (429), retry after 17 s",
        ),
        (
            {"status": 401, "payload": arm_error("ExpiredAuthenticationToken", "Expired.")},
            "ARM availabilityStatuses: token rejected (401): ExpiredAuthenticationToken",
        ),
        (
            {
                "status": 403,
                "payload": arm_error(
                    "AuthorizationFailed",
                    f"The client '{CLIENT_ID}' does not have authorization to perform action.",
                ),
            },
            "ARM availabilityStatuses: access denied (403): AuthorizationFailed; "
            "assign the app Reader on the subscription",
        ),
        (
            {
                "status": 409,
                "payload": arm_error("MissingSubscriptionRegistration", "Not registered."),
            },
            "ARM availabilityStatuses: status 409: MissingSubscriptionRegistration",
        ),
        (
            {"body": '{"value": [', "content_type": "application/json"},
            "ARM availabilityStatuses: vendor API returned malformed JSON",
        ),
    ],
)
async def test_arm_failures(
    ctx: ProbeContext,
    mock: aioresponses,
    caplog: pytest.LogCaptureFixture,
    reply: dict[str, Any],
    reason: str,
) -> None:
    token_reply(mock)
    mock.get(f"{HEALTH}/availabilityStatuses?api-version=2022-10-01", **reply)

    result = await probe(TARGET, options(), ctx)

    assert not result.success
    assert result.reason == reason
    assert set(by_service(result)) == {"erp", "web-app", "key-vault"}
    assert {s.status for s in result.vendor or []} == {"unknown"}
    assert_secret_free(result, caplog)


async def test_throttled_subscription_is_not_called_again(
    ctx: ProbeContext, clock: FakeClock, mock: aioresponses
) -> None:
    token_reply(mock)
    arm_replies(mock)
    before = await probe(TARGET, options(), ctx)
    clock.now += 60
    mock.get(
        f"{HEALTH}/availabilityStatuses?api-version=2022-10-01",
        status=429,
        payload=arm_error("TooManyRequests", "Rate limit exceeded."),
        headers={"Retry-After": "300"},
    )

    throttled = await probe(TARGET, options(), ctx)
    clock.now += 120
    later = await probe(TARGET, options(), ctx)

    assert throttled.success and later.success  # last state, said to be old
    assert later.vendor == before.vendor
    assert "throttled (429), retry after 180 s; showing vendor state from 08:00 UTC" in (
        later.reason
    )
    assert later.facts["vendor_state_age_seconds"] == 180.0
    assert arm_calls(mock) == 4  # three pages first, then the 429, then nothing


# ------------------------------------------------------------------------ mapping


@pytest.mark.parametrize(
    ("resource", "kind"),
    [
        (VM, "Microsoft.Compute/virtualMachines"),
        (DATABASE, "Microsoft.Sql/servers/databases"),
        (f"/subscriptions/{SUB}/resourceGroups/shop-rg", ""),
    ],
)
def test_resource_type(resource: str, kind: str) -> None:
    assert _resource_type(resource) == kind


def test_longest_prefix_then_type() -> None:
    mapping = {
        "Microsoft.Sql/servers/databases": "sql",
        SHOP_RG: "web-app",
        f"{SHOP_RG}/providers/Microsoft.Sql/servers/shop-sql": "orders-db",
    }
    assert _owner(DATABASE, mapping) == "orders-db"
    assert _owner(WEBAPP, mapping) == "web-app"
    assert _owner(DATABASE.replace("shop-rg", "other-rg"), mapping) == "sql"
    assert _owner(WEBAPP.replace("shop-rg", "shop-rg2"), mapping) is None  # not a prefix match


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("Available", "up"),
        ("degraded", "degraded"),
        ("UNAVAILABLE", "down"),
        ("Unknown", "unknown"),
        ("Pending", "unknown"),
    ],
)
def test_availability_states(word: str, state: str) -> None:
    assert arm_state(word) == state


def test_registered_with_valid_options() -> None:
    check_type = checks.check_types()["azure_resource_health"]
    assert check_type.options is Options
    assert SECRET not in repr(options())
    with pytest.raises(ValidationError):
        options(resources=["erp-vm01"])  # a resource id, not a name
    with pytest.raises(ValidationError):
        options(fallback_api_versions=["latest"])


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ({"impactMitigationTime": "2025-11-23T10:00:00Z"}, (NOW - 5400, NOW + 7200)),
        ({"duration": 3600}, (NOW - 5400, NOW - 1800)),  # no end, a duration
        ({"impactMitigationTime": "0001-01-01T00:00:00Z"}, (NOW - 5400, None)),  # not set
        ({"impactMitigationTime": "2025-11-23T06:00:00Z"}, (NOW - 5400, None)),  # before start
        ({"impactStartTime": None}, (None, None)),
    ],
)
def test_the_announced_maintenance_window(
    times: dict[str, Any], expected: tuple[float | None, float | None]
) -> None:
    announced = {"impactStartTime": "2025-11-23T06:30:00Z", **times}
    later = {"impactStartTime": "2025-11-30T06:30:00Z", "duration": 60}
    assert announced_window([later, announced]) == (
        expected if expected[0] is not None else (NOW + 7 * 86400 - 5400, NOW + 7 * 86400 - 5340)
    )
