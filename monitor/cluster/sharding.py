"""Who probes what: rendezvous (highest-random-weight) hashing over the live members.

Each (node, key) pair gets a pseudo-random weight from a stable hash; a key
belongs to the node with the highest weight. Every node computes the same
answer from the same member list without talking to the others, and a
membership change moves only the keys of the node that left (to the others,
evenly) or that joined (from the others, about 1/N of them).

The key is a subscription (``customer/service``), not a single check: a
subscription's status is the aggregate of its checks, and one node can only
aggregate what it probes itself, so all checks of a subscription move together.

blake2b, not ``hash()``: Python salts string hashes per process, and every
node must weigh a key the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable


def weight(node: str, key: str) -> int:
    """The stable weight of ``key`` on ``node`` (a 64-bit integer)."""
    digest = hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, nodes: Collection[str]) -> str | None:
    """The node that owns ``key`` among ``nodes`` (None when there is none)."""
    if not nodes:
        return None
    # ties (astronomically unlikely) go to the larger name, the same on every node
    return max(nodes, key=lambda node: (weight(node, key), node))


def assign(keys: Iterable[str], nodes: Collection[str]) -> dict[str, set[str]]:
    """Every node's share of ``keys``; each key in exactly one share (none without nodes)."""
    shares: dict[str, set[str]] = {node: set() for node in nodes}
    for key in keys:
        chosen = owner(key, nodes)
        if chosen is not None:
            shares[chosen].add(key)
    return shares


def subscription_key(customer: str, service: str) -> str:
    """The shard key of a subscription and of every one of its targets."""
    return f"{customer}/{service}"
