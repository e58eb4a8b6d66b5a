"""The m365_messages check against Graph's Message Center, mocked with aioresponses, and the
message board that de-duplicates posts across tenants and proposes maintenance windows.

Payloads follow Graph v1.0's serviceUpdateMessage (id MCnnnnnn, category, severity,
services, startDateTime/endDateTime, actionRequiredByDateTime, lastModifiedDateTime), in
camelCase as documented and PascalCase as some tenants' answers carry them.
"""

from __future__ import annotations

from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from checks.m365_messages import Options, probe
from monitor.message_center import MessageBoard, VendorMessage
from monitor.probe import ProbeContext, ProbeResult, Target
from tests.conftest import FakeClock

TENANTS = ("contoso", "fabrikam", "woodgrove")
CLIENT_ID = "3f1c0d7e-5a2b-4c8e-9d6f-0123456789ab"
SECRET = "Xq8~graph.SECRET_do-not-leak"
GRAPH = "https://microsoftgraph.chinacloudapi.cn/v1.0"
MESSAGES = f"{GRAPH}/admin/serviceAnnouncement/messages"
NOW = 1_763_884_800.0  # 2025-11-23 08:00:00 UTC
MAPPING = {"Exchange Online": "exchange-online", "SharePoint Online": "sharepoint-online"}


def tenant(name: str) -> str:
    return f"{name}.partner.onmschina.cn"


def token_url(name: str) -> str:
    return f"https://login.chinacloudapi.cn/{tenant(name)}/oauth2/v2.0/token"


def post(
    post_id: str,
    modified: str,
    *,
    category: str = "planForChange",
    severity: str = "normal",
    services: tuple[str, ...] = ("Exchange Online",),
    start: str | None = "2025-12-06T16:00:00Z",
    end: str | None = "2025-12-06T20:00:00Z",
    act_by: str | None = None,
    title: str = "Planned maintenance",
) -> dict[str, Any]:
    return {
        "id": post_id,
        "title": title,
        "category": category,
        "severity": severity,
        "services": list(services),
        "tags": ["Updated message"],
        "isMajorChange": False,
        "startDateTime": start,
        "endDateTime": end,
        "actionRequiredByDateTime": act_by,
        "lastModifiedDateTime": modified,
        "body": {"contentType": "html", "content": "<p>Window for the upgrade.</p>"},
        "details": [],
        "viewPoint": None,
    }


MC1 = post("MC900001", "2025-11-20T02:00:00Z")
MC2 = post(
    "MC900002",
    "2025-11-21T03:30:00Z",
    category="PreventOrFixIssue",  # PascalCase, as some tenants answer
    severity="High",
    services=("SharePoint Online",),
    start=None,
    end=None,
    act_by="2025-12-01T00:00:00Z",
    title="Update your SharePoint add-ins",
)
MC3 = post(
    "MC900003",
    "2025-11-22T05:00:00Z",
    category="stayInformed",
    services=("Microsoft Teams",),
    start=None,
    end=None,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def ctx(probe_ctx: ProbeContext, clock: FakeClock) -> ProbeContext:
    return ProbeContext(http=probe_ctx.http, timeout=5.0, wall=clock)


def options(name: str = "contoso", **changes: Any) -> Options:
    values: dict[str, Any] = {
        "tenant": tenant(name),
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "services": MAPPING,
        "page_size": 2,
    }
    return Options(**(values | changes))


def sign_in(mock: aioresponses, name: str = "contoso") -> None:
    mock.post(
        token_url(name),
        payload={"token_type": "Bearer", "expires_in": 3599, "access_token": f"tok-{name}"},
        repeat=True,  # a token lives an hour: a read an hour later signs in again
    )


def first_read(mock: aioresponses) -> None:
    """A full read over two pages."""
    mock.get(
        MESSAGES,
        payload={"value": [MC1, MC2], "@odata.nextLink": f"{MESSAGES}?$skiptoken=page2"},
    )
    mock.get(f"{MESSAGES}?$skiptoken=page2", payload={"value": [MC3]})


def requests_to(mock: aioresponses, url: str) -> list[dict[str, Any]]:
    """Keyword arguments of every GET of ``url`` (its query compared decoded)."""
    wanted = URL(url, encoded=True)
    return [
        request.kwargs
        for (method, called), requests in mock.requests.items()
        if method == "GET"
        and (called.path, sorted(called.query.items()))
        == (wanted.path, sorted(wanted.query.items()))
        for request in requests
    ]


async def read(ctx: ProbeContext, name: str = "contoso", **changes: Any) -> ProbeResult:
    return await probe(
        Target(name, "m365-messages", "mc", "m365_messages"), options(name, **changes), ctx
    )


async def test_pages_are_read_and_both_casings_understood(
    mock: aioresponses, ctx: ProbeContext
) -> None:
    sign_in(mock)
    first_read(mock)
    result = await read(ctx)
    # every page asked for small pages, with the token, never the secret
    for kwargs in requests_to(mock, MESSAGES) + requests_to(mock, f"{MESSAGES}?$skiptoken=page2"):
        assert kwargs["headers"]["Prefer"] == "odata.maxpagesize=2"
        assert kwargs["headers"]["Authorization"] == "Bearer tok-contoso"
    assert result.success, result.reason
    assert result.facts == {"vendor_messages": 3.0, "vendor_api_pages": 2.0}
    by_id = {message.id: message for message in result.messages or []}
    assert set(by_id) == {"MC900001", "MC900002", "MC900003"}
    assert (by_id["MC900002"].category, by_id["MC900002"].severity) == (
        "preventOrFixIssue",
        "high",
    )
    assert by_id["MC900002"].services == ("sharepoint-online",)
    assert by_id["MC900002"].action_required_by == 1_764_547_200.0  # 2025-12-01
    assert by_id["MC900001"].proposes_window
    assert not by_id["MC900003"].proposes_window  # stayInformed, and Teams is not mapped
    assert by_id["MC900003"].services == () and by_id["MC900003"].vendor_services == (
        "Microsoft Teams",
    )
    assert SECRET not in result.reason


async def test_later_reads_ask_only_for_changes_and_merge_them(
    mock: aioresponses, ctx: ProbeContext, clock: FakeClock
) -> None:
    changed = post(
        "MC900001",
        "2025-11-23T09:00:00Z",  # the vendor moved the window a week later
        start="2025-12-13T16:00:00Z",
        end="2025-12-13T20:00:00Z",
    )
    since = f"{MESSAGES}?$filter=lastModifiedDateTime%20gt%202025-11-22T05:00:00Z"
    sign_in(mock)
    first_read(mock)
    await read(ctx)
    mock.get(since, payload={"value": [changed]})
    clock.now += 3600  # past reuse_within: a new read
    result = await read(ctx)
    assert len(requests_to(mock, since)) == 1
    assert requests_to(mock, MESSAGES) and len(requests_to(mock, MESSAGES)) == 1
    assert result.success, result.reason
    by_id = {message.id: message for message in result.messages or []}
    assert set(by_id) == {"MC900001", "MC900002", "MC900003"}  # the others are kept
    assert by_id["MC900001"].start == 1_765_641_600.0  # 2025-12-13T16:00Z


async def test_one_read_per_tenant_per_interval(
    mock: aioresponses, ctx: ProbeContext, clock: FakeClock
) -> None:
    sign_in(mock)
    first_read(mock)
    await read(ctx)
    clock.now += 60  # well inside reuse_within: the same read is shared
    again = await read(ctx)
    assert len(requests_to(mock, MESSAGES)) == 1
    assert again.success and len(again.messages or []) == 3


async def test_graph_refusing_is_a_failure_without_the_secret(
    mock: aioresponses, ctx: ProbeContext
) -> None:
    sign_in(mock)
    mock.get(
        MESSAGES,
        status=403,
        payload={"error": {"code": "Authorization_RequestDenied", "message": "no"}},
    )
    result = await read(ctx)
    assert not result.success
    assert "access denied (403)" in result.reason and "ServiceMessage.Read.All" in result.reason
    assert SECRET not in result.reason and result.messages is None


async def test_a_post_reaching_three_tenants_is_listed_once_for_each(
    mock: aioresponses, ctx: ProbeContext
) -> None:
    board = MessageBoard()
    for name in TENANTS:
        sign_in(mock, name)
        mock.get(MESSAGES, payload={"value": [MC1] + ([MC2] if name == "contoso" else [])})
        result = await read(ctx, name)
        assert result.success, result.reason
        board.update(name, result.messages or [])
    assert sorted(board.posts) == ["MC900001", "MC900002"]
    assert board.customers_of("MC900001") == list(TENANTS)
    # listed per customer, the earliest action-required date first
    assert [m.id for m in board.for_customer("contoso")] == ["MC900002", "MC900001"]
    assert [m.id for m in board.for_customer("woodgrove")] == ["MC900001"]
    [proposal] = board.proposals()
    assert proposal.message_id == "MC900001"
    assert proposal.subscriptions == tuple((name, "exchange-online") for name in TENANTS)
    assert board.counts()[("contoso", "preventOrFixIssue", "high")] == 1
    assert board.counts()[("fabrikam", "planForChange", "normal")] == 1


def message(post_id: str, modified: float, **changes: Any) -> VendorMessage:
    values: dict[str, Any] = {
        "id": post_id,
        "title": "t",
        "category": "planForChange",
        "severity": "normal",
        "services": ("exchange-online",),
        "vendor_services": ("Exchange Online",),
        "last_modified": modified,
        "start": 100.0,
        "end": 200.0,
    }
    return VendorMessage(**(values | changes))


def test_the_board_keeps_the_latest_version_and_forgets_withdrawn_posts() -> None:
    board = MessageBoard()
    assert [m.id for m in board.update("contoso", [message("MC1", 10.0)])] == ["MC1"]
    # fabrikam's read still carries the older version: it does not win
    assert board.update("fabrikam", [message("MC1", 5.0, start=50.0)]) == []
    assert board.posts["MC1"].message.start == 100.0
    changed = board.update("contoso", [message("MC1", 20.0, start=150.0)])
    assert [m.start for m in changed] == [150.0]
    assert board.proposals()[0].starts_at == 150.0
    board.update("contoso", [])  # withdrawn for contoso, still listed for fabrikam
    assert board.customers_of("MC1") == ["fabrikam"]
    board.update("fabrikam", [])
    assert board.posts == {}


@pytest.mark.parametrize(
    ("changes", "proposes"),
    [
        ({}, True),
        ({"category": "stayInformed"}, False),
        ({"end": None}, False),
        ({"end": 50.0}, False),  # ends before it starts
        ({"services": ()}, False),  # no service of ours
    ],
)
def test_which_posts_propose_a_window(changes: dict[str, Any], proposes: bool) -> None:
    assert message("MC1", 1.0, **changes).proposes_window is proposes
