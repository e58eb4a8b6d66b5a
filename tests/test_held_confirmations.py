"""The race: a target can be confirmed down before two canary rounds have failed. While the
verdict is pending, a network-class confirmation to down is held, then applied as down (the
canaries see) or as unknown (the node is blind). A fake clock; the results are fed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.canaries import SightKeeper
from monitor.catalog import Catalog, TargetSpec, load_catalog
from monitor.notify.templates import TemplateRenderer
from monitor.probe import ProbeResult, Status
from monitor.sight import CanaryOutcome
from monitor.status import StatusBoard, Transition, observe
from tests.conftest import FakeClock

CONFIG = """
monitor:
  canaries:
    - {name: gateway-a, type: tcp, host: 127.0.0.1, port: 9}
    - {name: gateway-b, type: tcp, host: 127.0.0.1, port: 9}
  blindness: {rounds: 2, burst_services: 2, burst_window: 60s}
defaults: {interval: 60s, retry_interval: 10s, failure_threshold: 3}
services:
  exchange-online:
    name: Exchange Online
    checks: [{name: port, type: tcp, host: 127.0.0.1, port: 9}]
  azure-portal:
    name: Azure portal
    checks: [{name: port, type: tcp, host: 127.0.0.1, port: 9}]
customers:
  - {id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [exchange-online, azure-portal]}
"""
EXCHANGE = "contoso/exchange-online/port"
PORTAL = "contoso/azure-portal/port"
REFUSED = ProbeResult(success=False, reason="connection refused", network_failure=True)
HTTP_503 = ProbeResult(success=False, reason="status 503 (expected 200)")
FAILING = [CanaryOutcome("gateway-a", False, "timeout"), CanaryOutcome("gateway-b", False, "")]
PASSING = [CanaryOutcome("gateway-a", True), CanaryOutcome("gateway-b", True)]


class Pipeline:
    """The daemon's status pipeline, reduced to the thresholds: what each target became."""

    def __init__(self, catalog: Catalog, clock: FakeClock) -> None:
        self.catalog, self.clock = catalog, clock
        self.board = StatusBoard()
        self.transitions: list[Transition] = []
        self.keeper = SightKeeper(CollectorRegistry(), clock, node="noc-sh-01")
        self.keeper.bind(self.board, self.apply)
        self.keeper.configure(catalog, TemplateRenderer())

    def apply(self, spec: TargetSpec, result: ProbeResult) -> None:
        state = self.board.target(spec.target.id, self.clock())
        change = observe(state, spec.target.id, result, spec.timing, self.clock())
        if change is not None:
            self.transitions.append(change)

    def probe(self, target_id: str, result: ProbeResult, at: float) -> bool:
        """Feed one result at ``at``; False when it was held."""
        self.clock.now = at
        spec = self.catalog.targets[target_id]
        state = self.board.target(target_id, at)
        admitted = self.keeper.admit(spec, result, state)
        if admitted is not None:
            self.apply(spec, admitted)
        return admitted is not None

    def status(self, target_id: str) -> Status:
        return self.board.targets[target_id].status


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return Pipeline(load_catalog(path, env={}), FakeClock(1000.0))


def _burst(pipeline: Pipeline) -> None:
    """Exchange fails twice (not yet confirmed), the portal once: two services, a burst."""
    assert pipeline.probe(EXCHANGE, REFUSED, 1000.0)
    assert pipeline.probe(EXCHANGE, REFUSED, 1010.0)
    assert pipeline.probe(PORTAL, REFUSED, 1012.0)
    assert pipeline.keeper.sight.pending()


async def test_held_confirmation_becomes_unknown_when_the_node_turns_out_blind(
    pipeline: Pipeline,
) -> None:
    _burst(pipeline)
    assert not pipeline.probe(EXCHANGE, REFUSED, 1020.0)  # would confirm down: held
    await pipeline.keeper.verdict(FAILING, started=1012.5)
    assert not pipeline.probe(EXCHANGE, REFUSED, 1030.0)  # one failing round: still held
    assert pipeline.status(EXCHANGE) is not Status.DOWN
    await pipeline.keeper.verdict(FAILING, started=1031.0)
    assert pipeline.keeper.sight.blind
    assert pipeline.status(EXCHANGE) is Status.UNKNOWN
    assert Status.DOWN not in {t.current for t in pipeline.transitions}
    # while blind every result is unknown, a success too: nothing resolves from it
    assert pipeline.probe(PORTAL, ProbeResult(success=True), 1040.0)
    assert pipeline.board.targets[PORTAL].last_result.reason.startswith("monitor blind: ")


async def test_held_confirmation_is_applied_as_down_when_the_canaries_see(
    pipeline: Pipeline,
) -> None:
    _burst(pipeline)
    assert not pipeline.probe(EXCHANGE, REFUSED, 1020.0)
    assert pipeline.transitions == []
    await pipeline.keeper.verdict(PASSING, started=1012.5)
    assert not pipeline.keeper.sight.pending()
    assert [(t.target_id, t.current) for t in pipeline.transitions] == [(EXCHANGE, Status.DOWN)]
    assert pipeline.transitions[0].reason == "connection refused"


async def test_a_passing_round_that_began_before_the_burst_does_not_release(
    pipeline: Pipeline,
) -> None:
    _burst(pipeline)
    assert not pipeline.probe(EXCHANGE, REFUSED, 1020.0)
    await pipeline.keeper.verdict(PASSING, started=1011.0)  # started before the burst
    assert pipeline.transitions == []
    await pipeline.keeper.verdict(PASSING, started=1021.0)
    assert [t.current for t in pipeline.transitions] == [Status.DOWN]


async def test_an_answer_is_never_held_and_without_a_burst_nothing_is(
    pipeline: Pipeline,
) -> None:
    # one service failing (no burst): confirmed at once, as without canaries
    for at in (1000.0, 1010.0, 1020.0):
        assert pipeline.probe(EXCHANGE, REFUSED, at)
    assert pipeline.status(EXCHANGE) is Status.DOWN
    # a pending verdict holds network failures only: a 503 is the service's answer
    pipeline.keeper.sight.failure_seen("azure-portal", 1021.0)
    pipeline.keeper.sight.failure_seen("exchange-online", 1021.0)
    assert pipeline.keeper.sight.pending()
    for at in (1030.0, 1040.0, 1050.0):
        assert pipeline.probe(PORTAL, HTTP_503, at)
    assert pipeline.status(PORTAL) is Status.DOWN
