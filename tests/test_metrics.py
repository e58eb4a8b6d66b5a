"""The per-target exposition: what a scrape shows as targets come, change and go."""

from __future__ import annotations

import asyncio
import itertools
import math
import shutil
import subprocess
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from monitor.exposition import BLOCK_ROWS
from monitor.metrics import TargetMetrics
from monitor.probe import ProbeResult, Status, Target


async def scrape(metrics: TargetMetrics) -> str:
    return b"".join([chunk async for chunk in metrics.render()]).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, parsed the way a Prometheus client library does."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"{key} appears twice"
            found[key] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def target(customer: str, service: str = "web", check: str = "home", kind: str = "http") -> Target:
    return Target(customer, service, check, kind)


def http_result(duration: float, status_code: float = 200.0, **phases: float) -> ProbeResult:
    return ProbeResult(
        True,
        duration,
        phases=phases or {"connect": duration / 2, "processing": duration / 2},
        facts={"http_status_code": status_code},
    )


def labels_of(t: Target) -> dict[str, str]:
    return {"customer": t.customer, "service": t.service, "check": t.check}


async def test_a_scrape_shows_each_targets_last_result() -> None:
    metrics = TargetMetrics()
    a, b = target("contoso"), target("fabrikam")
    for t in (a, b):
        metrics.add_target(t)
        metrics.set_target_status(t.id, Status.UP, 1_700_000_000.5)
    metrics.record(a.id, http_result(0.25, connect=0.125, tls=0.0, processing=0.125))
    metrics.record(b.id, ProbeResult(False, 10.0, "timeout after 10s"))

    text = await scrape(metrics)
    assert value(text, "probe_success", **labels_of(a)) == 1.0
    assert value(text, "probe_success", **labels_of(b)) == 0.0
    assert value(text, "probe_duration_seconds", **labels_of(b)) == 10.0
    assert value(text, "probe_http_status_code", **labels_of(a)) == 200.0
    assert value(text, "probe_http_status_code", **labels_of(b)) is None
    assert value(text, "probe_http_duration_seconds", **labels_of(a), phase="connect") == 0.125
    assert value(text, "csp_monitor_target_status", **labels_of(a)) == 1.0
    assert value(text, "csp_monitor_target_status_change_timestamp_seconds", **labels_of(b)) == (
        1_700_000_000.5
    )
    assert value(text, "csp_monitor_probes_total", **labels_of(b), result="down") == 1.0

    metrics.record(a.id, http_result(0.5, status_code=503.0))
    metrics.record(a.id, http_result(0.75, status_code=503.0))
    text = await scrape(metrics)
    assert value(text, "probe_duration_seconds", **labels_of(a)) == 0.75
    assert value(text, "probe_http_status_code", **labels_of(a)) == 503.0
    assert value(text, "csp_monitor_probes_total", **labels_of(a), result="up") == 3.0


async def test_values_change_in_every_block_of_a_large_table() -> None:
    metrics = TargetMetrics()
    targets = [target(f"c{i:05d}") for i in range(2 * BLOCK_ROWS + 5)]
    for t in targets:
        metrics.add_target(t)
        metrics.record(t.id, http_result(0.001))
    await scrape(metrics)
    changed = targets[:: BLOCK_ROWS // 2]
    for index, t in enumerate(changed):
        metrics.record(t.id, http_result(0.002 + index / 1000))

    found = samples(await scrape(metrics))
    durations = {
        dict(labels)["customer"]: v
        for (name, labels), v in found.items()
        if name == "probe_duration_seconds"
    }
    assert len(durations) == len(targets)
    for index, t in enumerate(changed):
        assert durations[t.customer] == 0.002 + index / 1000
    assert durations[targets[1].customer] == 0.001


async def test_a_removed_targets_series_disappear_and_its_row_carries_no_old_values() -> None:
    metrics = TargetMetrics()
    old, kept = target("contoso", check="old"), target("contoso", check="kept")
    for t in (old, kept):
        metrics.add_target(t)
        metrics.record(t.id, http_result(0.1))
    await scrape(metrics)

    metrics.remove_target(old.id)
    text = await scrape(metrics)
    assert 'check="old"' not in text
    assert value(text, "probe_duration_seconds", **labels_of(kept)) == 0.1

    new = target("contoso", check="new", kind="tcp")
    metrics.add_target(new)  # takes the removed target's row
    text = await scrape(metrics)
    assert 'check="new"' not in text  # nothing measured yet
    metrics.record(new.id, ProbeResult(True, 0.3, phases={"connect": 0.3}))
    text = await scrape(metrics)
    assert value(text, "probe_duration_seconds", **labels_of(new)) == 0.3
    assert value(text, "probe_tcp_duration_seconds", **labels_of(new), phase="connect") == 0.3
    assert value(text, "probe_http_status_code", **labels_of(new)) is None
    assert 'check="old"' not in text


async def test_a_phase_the_last_result_lacks_is_not_shown() -> None:
    metrics = TargetMetrics()
    t = target("contoso")
    metrics.add_target(t)
    metrics.record(t.id, http_result(0.2, connect=0.1, tls=0.05, processing=0.05))
    text = await scrape(metrics)
    assert value(text, "probe_http_duration_seconds", **labels_of(t), phase="tls") == 0.05

    metrics.record(t.id, http_result(0.2, connect=0.1, processing=0.1))
    text = await scrape(metrics)
    assert value(text, "probe_http_duration_seconds", **labels_of(t), phase="tls") is None
    assert value(text, "probe_http_duration_seconds", **labels_of(t), phase="processing") == 0.1


async def test_special_values_and_awkward_label_values_are_written_as_prometheus_reads_them() -> (
    None
):
    metrics = TargetMetrics()
    odd = target('cust"om\\er', service="50%-off\nsale", check="%s %r")
    plain = target("plain")
    for t in (odd, plain):
        metrics.add_target(t)
    metrics.record(odd.id, ProbeResult(True, math.inf, facts={"dns_lookup_time_seconds": math.nan}))
    metrics.record(plain.id, ProbeResult(True, -math.inf, facts={"http_content_length": 12}))

    text = await scrape(metrics)
    assert " +Inf\n" in text and " -Inf\n" in text and " NaN\n" in text
    assert value(text, "probe_duration_seconds", **labels_of(odd)) == math.inf
    assert value(text, "probe_duration_seconds", **labels_of(plain)) == -math.inf
    lookup = value(text, "probe_dns_lookup_time_seconds", **labels_of(odd))
    assert lookup is not None and math.isnan(lookup)
    assert value(text, "probe_http_content_length", **labels_of(plain)) == 12.0


async def test_subscription_sla_and_vendor_series() -> None:
    metrics = TargetMetrics()
    metrics.set_subscription("contoso", "exchange", Status.DOWN, 1_700_000_100.0)
    metrics.set_subscription("fabrikam", "exchange", Status.UP, 1_700_000_000.0)
    metrics.set_sla("contoso", "exchange", target_percent=99.9, availability=0.998, coverage=0.4)
    metrics.set_sla("nobody", "exchange", target_percent=99.0)  # not a subscription: ignored
    metrics.set_vendor("contoso", "exchange", "m365", 3.0)

    text = await scrape(metrics)
    sub = {"customer": "contoso", "service": "exchange"}
    assert value(text, "csp_monitor_subscription_status", **sub) == 3.0
    assert value(text, "csp_monitor_subscription_status_change_timestamp_seconds", **sub) == (
        1_700_000_100.0
    )
    assert value(text, "csp_monitor_sla_target_ratio", **sub) == 0.999
    assert value(text, "csp_monitor_sla_availability_ratio", **sub, window="month") == 0.998
    assert value(text, "csp_monitor_sla_coverage_ratio", **sub, window="month") == 0.4
    assert value(text, "csp_monitor_vendor_status", **sub, source="m365") == 3.0
    assert value(text, "csp_monitor_sla_target_ratio", customer="fabrikam", service="exchange") is (
        None
    )
    assert "nobody" not in text

    metrics.remove_subscription("contoso", "exchange")
    text = await scrape(metrics)
    assert value(text, "csp_monitor_subscription_status", **sub) is None
    assert value(text, "csp_monitor_sla_target_ratio", **sub) is None


async def test_promtool_accepts_a_large_exposition() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package prometheus (.ci/run does)"
    metrics = TargetMetrics()
    for i in range(BLOCK_ROWS + 10):
        t = target(f"c{i:05d}", kind="http" if i % 3 else "tls")
        metrics.add_target(t, f'https://{t.customer}.example.cn/"quoted"\\path')
        metrics.set_target_status(t.id, Status.UP, 1_700_000_000.0)
        metrics.set_subscription(t.customer, t.service, Status.UP, 1_700_000_000.0)
        metrics.record(t.id, http_result(0.001 * (i % 17 + 1)))
        if i % 3 == 0:  # info series, with a certificate of its own per target
            metrics.record(t.id, tls_result(f"{i:064x}"))
    text = await scrape(metrics)
    checked = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


async def render_counting_turns(clock: Callable[[], float]) -> tuple[int, int]:
    """Renders 20 blocks of targets with ``clock`` as the render's clock: how many chunks
    it gave, and how many turns a task waiting on the same loop got meanwhile."""
    metrics = TargetMetrics()
    for i in range(20 * BLOCK_ROWS):
        t = target(f"c{i:05d}")
        metrics.add_target(t)
        metrics.record(t.id, http_result(0.001))
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = turns
    chunks = [c async for c in metrics.render(slice_seconds=0.04, clock=clock)]
    task.cancel()
    return len(chunks), turns - before


async def test_rendering_many_targets_lets_other_tasks_run() -> None:
    readings = itertools.count(step=0.02)  # as if every chunk took 20 ms to render
    chunks, turns = await render_counting_turns(lambda: next(readings))
    # the probes' tasks get a turn every other chunk while one scrape is rendered
    assert chunks >= 20 and turns >= 5


async def test_a_fast_render_does_not_wait_behind_other_tasks() -> None:
    """Each yield waits behind everything ready: a render within one slice yields none."""
    chunks, turns = await render_counting_turns(lambda: 0.0)
    assert chunks >= 20 and turns == 0


def tls_result(fingerprint: str, version: str = "TLS 1.3") -> ProbeResult:
    return ProbeResult(
        True,
        0.01,
        facts={"ssl_earliest_cert_expiry": 1_800_000_000.0},
        info={
            "tls_version_info": {"version": version},
            "ssl_last_chain_info": {"fingerprint_sha256": fingerprint, "subject": 'CN="x"'},
        },
    )


async def test_target_label_and_info_series_follow_the_last_result() -> None:
    metrics = TargetMetrics()
    a = target("contoso", kind="tls")
    metrics.add_target(a, "portal.contoso.cn:443")
    labels = {**labels_of(a), "target": "portal.contoso.cn:443"}
    metrics.record(a.id, tls_result("aa"))
    text = await scrape(metrics)
    assert value(text, "probe_success", **labels) == 1.0
    assert value(text, "probe_tls_version_info", **labels, version="TLS 1.3") == 1.0
    chain = {**labels, "fingerprint_sha256": "aa", "subject": 'CN="x"'}
    assert value(text, "probe_ssl_last_chain_info", **chain) == 1.0

    # a new certificate: its series replaces the old one, not beside it
    metrics.record(a.id, tls_result("bb", version="TLS 1.2"))
    text = await scrape(metrics)
    assert value(text, "probe_ssl_last_chain_info", **chain) is None
    assert value(text, "probe_ssl_last_chain_info", **{**chain, "fingerprint_sha256": "bb"}) == 1.0
    assert value(text, "probe_tls_version_info", **labels, version="TLS 1.3") is None
    assert value(text, "probe_tls_version_info", **labels, version="TLS 1.2") == 1.0

    metrics.remove_target(a.id)
    text = await scrape(metrics)
    assert "contoso" not in text
