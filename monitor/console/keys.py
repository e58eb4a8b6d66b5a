"""The console's two keys: the one that signs session cookies (and their CSRF tokens)
and the one that signs the customers' status links.

A key set in the config (``monitor.console.session_key``, ``status_page_key``) is
used as it is. In a cluster, without one, each is derived from ``monitor.link_key``
(which every node must share): a sign-in and a status link made by one node work
on every node, without another secret to distribute. A node running alone keeps a
random key in its data directory, as before (so its links stay what they were).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from pydantic import SecretStr

from monitor.alerting import data_dir
from monitor.catalog import Catalog
from monitor.links import key_file

SESSION = "console-session"
STATUS_PAGE = "status-page"


def console_key(catalog: Catalog, base: Path, purpose: str) -> bytes:
    """The key for ``purpose`` (``SESSION`` or ``STATUS_PAGE``)."""
    settings = catalog.config.monitor
    configured: SecretStr | None = (
        settings.console.session_key if purpose == SESSION else settings.console.status_page_key
    )
    if configured is not None:
        return configured.get_secret_value().encode()
    cluster = settings.cluster
    if cluster is not None and cluster.enabled and settings.link_key is not None:
        shared = settings.link_key.get_secret_value().encode()
        return hmac.new(shared, f"csp-monitor {purpose} key".encode(), hashlib.sha256).digest()
    return key_file(data_dir(catalog, base), f"{purpose}.key")
