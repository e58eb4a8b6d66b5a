"""The console's Config page: the running config's digest, the last reload and its problems
(in a real headless Chromium), and the cluster view, which is ``GET /api/v1/cluster``'s
document (over plain HTTP against a clustered daemon on PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from monitor.daemon import Daemon
from tests.conftest import unused_port, wait_until
from tests.console_helpers import (
    DaemonThread,
    chromium,
    close_chromium,
    screenshot,
    screenshots_folder,
)

CONFIG = """
monitor:
  listen: 127.0.0.1:{listen}
  public_url: http://127.0.0.1:{listen}
  shutdown_grace: 1s
  api_tokens:
    - {{name: noc, token: noc-token, roles: [operate]}}
    - {{name: auditor, token: read-token, roles: [read]}}
{extra}
defaults: {{interval: 1h}}
services:
  portal:
    name: Azure portal
    checks: [{{name: web, type: tcp, host: 127.0.0.1, port: {closed}}}]
customers:
  - {{id: contoso, name: Contoso, tenant_domain: contoso.partner.onmschina.cn,
     subscriptions: [portal]}}
"""


def test_a_reader_sees_the_digest_and_a_refused_reload_with_each_problem(tmp_path: Path) -> None:
    listen = unused_port()
    config = tmp_path / "config.yaml"
    good = CONFIG.format(listen=listen, extra="", closed=unused_port())
    config.write_text(good)
    daemon = DaemonThread(config)
    driver = profile = None
    try:
        daemon.start()
        catalog = daemon.daemon.catalog
        assert catalog is not None
        digest = catalog.digest
        config.write_text(
            good.replace("interval: 1h", "interval: soon").replace("id: contoso", "id: Contoso!")
        )
        applied, _ = daemon.call(daemon.daemon.reload())
        assert not applied

        driver, profile = chromium()
        base = f"http://127.0.0.1:{listen}"
        driver.get(f"{base}/signin?next=/config")
        driver.find_element(By.ID, "token").send_keys("read-token")  # role read is enough
        driver.find_element(By.ID, "sign-in").click()
        # the sign-in form posts and redirects: wait for the Config page to replace it
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "config-digest"))
        assert driver.find_element(By.ID, "config-digest").text == digest
        reload = driver.find_element(By.ID, "last-reload")
        assert reload.get_attribute("data-result") == "rejected"
        assert "the previous config keeps running" in reload.text
        problems = driver.find_element(By.ID, "reload-problems").text
        assert "defaults.interval: invalid duration 'soon'" in problems
        assert "customers[0].id" in problems
        assert "runs alone" in driver.find_element(By.ID, "no-cluster").text
        screenshot(driver, screenshots_folder(tmp_path / "shots"), "config-page")

        config.write_text(good)  # fixed: the page says it was reloaded
        applied, _ = daemon.call(daemon.daemon.reload())
        assert applied
        driver.refresh()
        assert driver.find_element(By.ID, "last-reload").get_attribute("data-result") == (
            "reloaded"
        )
        assert not driver.find_elements(By.ID, "reload-problems")
    finally:
        if driver is not None and profile is not None:
            close_chromium(driver, profile)
        daemon.stop()


async def test_in_a_cluster_the_page_shows_the_members_and_the_leader_of_the_cluster_api(
    tmp_path: Path, pg_database: str
) -> None:
    listen = unused_port()
    extra = (
        f"  store: {pg_database}\n"
        "  audit_key: config-page-audit-key\n"
        "  link_key: config-page-link-key-0123\n"
        "  cluster: {node_id: node-a, heartbeat_interval: 0.3s, dead_after: 2s}"
    )
    (tmp_path / "config.yaml").write_text(
        CONFIG.format(listen=listen, extra=extra, closed=unused_port())
    )
    daemon = Daemon(tmp_path / "config.yaml")
    await daemon.start()
    base = f"http://127.0.0.1:{listen}"
    try:
        # the lease is taken once started: the API and the page, read one after the other,
        # would otherwise show the cluster on either side of that moment
        await wait_until(
            lambda: daemon.cluster is not None and daemon.cluster.leadership.is_leader,
            10.0,
            "node-a leading",
        )
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"{base}/api/v1/cluster") as response:
                document = await response.json()
            async with session.get(f"{base}/signin") as response:
                csrf = re.search(r'name="csrf" value="([^"]+)"', await response.text())
            assert csrf
            async with session.post(
                f"{base}/signin",
                data={"csrf": csrf.group(1), "token": "read-token", "next": "/config"},
            ) as response:
                page = await response.text()
    finally:
        await daemon.close()
    assert document["node"] == "node-a"
    members = re.findall(r'<tr data-node="([^"]+)" data-alive="(\w+)" data-leader="(\w+)">', page)
    assert members == [
        (m["node"], str(m["alive"]).lower(), str(m["leader"]).lower()) for m in document["members"]
    ]
    assert members == [("node-a", "true", "true")]
    leader = re.search(r'<dd id="cluster-leader">(.*?)</dd>', page, re.S)
    assert leader and f"epoch {document['leader']['epoch']}" in leader.group(1)
    assert 'id="no-cluster"' not in page
