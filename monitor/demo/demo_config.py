"""The daemon's config for the demo world: written into the demo's temporary folder
(its store and file outbox go there too), checked like any other config."""

from __future__ import annotations

import json
from pathlib import Path

from monitor.demo.world import CUSTOMERS, World

SERVICE_NAMES = {
    "exchange-online": "Exchange Online (operated by 21Vianet)",
    "sharepoint-online": "SharePoint Online (operated by 21Vianet)",
    "entra-signin": "Microsoft Entra sign-in (operated by 21Vianet)",
    "web-app": "Customer web app (Azure App Service)",
}
CHECK_NAMES = {
    "exchange-online": "owa",
    "sharepoint-online": "intranet",
    "entra-signin": "openid-configuration",
    "web-app": "health",
}
# one contact each, who gets the customer updates (in outbox/customers)
CONTACTS: dict[str, dict[str, object]] = {
    "contoso": {"name": "王芳", "email": "wang.fang@contoso.example.cn", "language": "zh-CN"},
    "fabrikam": {"name": "Peter Hall", "email": "it@fabrikam.example.cn", "language": "en"},
    "northwind": {"name": "陈刚", "email": "ops@northwind.example.cn", "language": "zh-CN"},
}


def _contact(customer: str) -> str:
    return json.dumps({**CONTACTS[customer], "notify": True}, ensure_ascii=False)


def demo_config(world: World, listen: str, public_url: str, token: str) -> str:
    """The YAML text (values quoted as JSON, which YAML reads as they are)."""
    services = "\n".join(
        f"  {service}:\n"
        f"    name: {json.dumps(name)}\n"
        "    checks:\n"
        f"      - {{name: {CHECK_NAMES[service]}, type: http, "
        f"url: {json.dumps(world.url(service))}, degraded_latency: 500ms}}"
        for service, name in SERVICE_NAMES.items()
    )
    customers = "\n".join(
        f"  - id: {customer}\n"
        f"    name: {json.dumps(name)}\n"
        f"    tenant_domain: {customer}.partner.onmschina.cn\n"
        f"    tier: {'gold' if customer == 'contoso' else 'standard'}\n"
        f"    contacts: [{_contact(customer)}]\n"
        f"    subscriptions: [{', '.join(SERVICE_NAMES)}]"
        for customer, name in CUSTOMERS.items()
    )
    return f"""# csp-monitor demo: a simulated tenant world on 127.0.0.1 (`csp-monitor demo`)
monitor:
  listen: {listen}
  public_url: {public_url}
  data_dir: ./data
  shutdown_grace: 4s  # longer than a probe's timeout: every probe finishes
  log_level: error
  api_tokens:
    - {{name: demo, token: {json.dumps(token)}, roles: [admin]}}
defaults: {{interval: 2s, retry_interval: 1s, timeout: 3s, failure_threshold: 2,
           success_threshold: 2}}
incidents:
  default_policy: standard
  tick_interval: 1s
  # first pages wait 5 s: the Exchange outage pages once, as one vendor-side incident
  correlation: {{min_customers: 3, hold: 5s}}
escalation_policies:
  standard:
    steps:
      - {{after: 0s, notify: [oncall-outbox]}}
      - {{after: 1m, notify: [lead-outbox]}}
      - {{after: 2m, action: vendor_ticket, notify: [vendor-outbox]}}
notifications:
  poll_interval: 500ms
  customer_updates_channel: customer-outbox
channels:
  oncall-outbox: {{type: file, directory: outbox/oncall}}
  lead-outbox: {{type: file, directory: outbox/lead}}
  vendor-outbox: {{type: file, directory: outbox/vendor}}
  customer-outbox: {{type: file, directory: outbox/customers}}
services:
{services}
customers:
{customers}
"""


def write_demo_config(folder: Path, world: World, listen: str, public_url: str, token: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(demo_config(world, listen, public_url, token), encoding="utf-8")
    return path
