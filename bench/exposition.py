"""Goal 3 alone, in process: rendering /metrics for 10,000 targets, no network, no probes.

``bench.scale`` measures the scrape inside a daemon under load (the figure the goal is
about); this one isolates the renderer so that a change to it can be judged in seconds.
It fills ``TargetMetrics`` with N http targets of the shape ``bench.scale`` configures
(one check per customer subscription, the facts and phases the http plugin reports),
then, for each round, records fresh results for half the targets (what 15 s of a 30 s
interval changes between two scrapes) and renders everything. Printed: the render's wall
time and CPU, the longest stretch between two yields to the event loop (how long the
scrape could stall probing), the size, and what recording a result costs (paid once
per probe, inside the goal-1 CPU figure); prometheus_client renders the same label
sets for reference (anchor D1).

    python -m bench.exposition                    # 10,000 targets, 7 rounds
    python -m bench.exposition --targets 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

from bench.common import REPO, print_table, self_cpu, spread, verdict
from bench.scale import GOAL_SCRAPE, GOAL_STALL, REF_PROMCLIENT_10K, promclient_role
from monitor.metrics import TargetMetrics
from monitor.probe import ProbeResult, Status, Target

GOAL_RENDER = GOAL_SCRAPE


def http_result(rng: random.Random) -> ProbeResult:
    """A result shaped like the http plugin's against a local server."""
    phases = {
        "resolve": rng.uniform(0.00001, 0.0001),
        "connect": rng.uniform(0.0001, 0.001),
        "tls": 0.0,
        "processing": rng.uniform(0.0002, 0.003),
        "transfer": rng.uniform(0.00001, 0.0002),
    }
    facts = {
        "http_status_code": 200.0,
        "http_redirects": 0.0,
        "http_ssl": 0.0,
        "http_version": 1.1,
        "http_content_length": 3.0,
        "http_uncompressed_body_length": 3.0,
        "failed_due_to_regex": 0.0,
        "dns_lookup_time_seconds": rng.uniform(0.0, 0.002),
        "ip_protocol": 4.0,
        "ip_addr_hash": 144_953_630.0,
    }
    return ProbeResult(True, sum(phases.values()), phases=phases, facts=facts)


def build(targets: int, rng: random.Random) -> tuple[TargetMetrics, list[str]]:
    metrics = TargetMetrics()
    ids = []
    now = time.time()
    for i in range(1, targets + 1):
        target = Target(f"c{i:05d}", "web", "ok", "http")
        # the `target` label, as the daemon sets it: the URL probed
        metrics.add_target(target, f"https://{target.customer}.partner.onmschina.cn/owa/")
        metrics.set_target_status(target.id, Status.UP, now - rng.uniform(0, 3600))
        metrics.set_subscription(target.customer, target.service, Status.UP, now)
        metrics.set_sla(target.customer, target.service, target_percent=99.9, availability=1.0)
        metrics.record(target.id, http_result(rng))
        ids.append(target.id)
    return metrics, ids


async def render_once(metrics: TargetMetrics) -> tuple[float, float, float, int]:
    """Wall time, CPU, the longest stretch without yielding, and bytes."""
    started, cpu, size, longest = time.perf_counter(), self_cpu(), 0, 0.0
    stretch = started
    async for chunk in metrics.render():
        size += len(chunk)
        now = time.perf_counter()
        longest = max(longest, now - stretch)
        stretch = now
    return time.perf_counter() - started, self_cpu() - cpu, longest, size


async def run(targets: int, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    metrics, ids = build(targets, rng)
    first = await render_once(metrics)  # builds the templates and formats every value
    walls, cpus, stalls, sizes, records = [], [], [], [], []
    for _ in range(rounds):
        batch = [(target_id, http_result(rng)) for target_id in rng.sample(ids, len(ids) // 2)]
        started = time.perf_counter()
        for target_id, result in batch:
            metrics.record(target_id, result)
        records.append((time.perf_counter() - started) / len(batch))
        wall, cpu, stall, size = await render_once(metrics)
        walls.append(wall)
        cpus.append(cpu)
        stalls.append(stall)
        sizes.append(size)
    reference = min(promclient_role(targets, 1)["times"])
    scale = targets / 10_000
    print(f"{targets:,} targets, {rounds} rounds, half the targets probed between renders")
    print_table(
        f"/metrics rendering, in process ({REPO.name})",
        [
            (
                "render, wall",
                spread(walls, " s", digits=3),
                f"≤ {GOAL_RENDER * scale:.3f} s",
                verdict(max(walls), GOAL_RENDER * scale),
            ),
            ("render, CPU", spread(cpus, " s", digits=3), "", ""),
            (
                "first render (every series new, as after start-up)",
                f"{first[0]:.3f} s",
                f"≤ {GOAL_RENDER * scale:.3f} s",
                verdict(first[0], GOAL_RENDER * scale),
            ),
            (
                "longest stretch without yielding",
                spread(stalls, " ms", 1000.0, 1),
                f"≤ {GOAL_STALL * 1000:.0f} ms",
                verdict(max(stalls), GOAL_STALL),
            ),
            ("record() per probe result", spread(records, " µs", 1e6, 1), "", ""),
            ("exposition size", spread(sizes, " MB", 1e-6, 1), "", ""),
            (
                "prometheus_client, same label sets",
                f"{reference:.2f} s",
                f"anchor {REF_PROMCLIENT_10K * scale:.2f} s",
                "",
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(run(args.targets, max(1, min(args.rounds, 100)), args.seed))


if __name__ == "__main__":
    main()
