"""The simulated tenant world: one local HTTP server standing in for each customer's
Exchange Online (Outlook on the web), SharePoint Online, sign-in (the OpenID
configuration of its tenant) and web app, each of which can be made to fail or to
answer slowly."""

from __future__ import annotations

import asyncio
from enum import Enum

from aiohttp import web

CUSTOMERS = {
    "contoso": "Contoso (China) Ltd.",
    "fabrikam": "Fabrikam Trading (Shanghai) Co., Ltd.",
    "northwind": "Northwind Logistics (Beijing) Ltd.",
}
# the endpoint of each service, below /{customer}
PATHS = {
    "exchange-online": "owa/",
    "sharepoint-online": "sites/intranet/",
    "entra-signin": "v2.0/.well-known/openid-configuration",
    "web-app": "healthz",
}
SLOW_SECONDS = 0.8  # above the demo's degraded_latency (0.5 s), below its retry interval


class Behaviour(Enum):
    OK = "ok"
    FAILING = "failing"
    SLOW = "slow"


class World:
    """The endpoints and how each answers now, by (customer, service)."""

    def __init__(self) -> None:
        self.behaviour: dict[tuple[str, str], Behaviour] = {
            (customer, service): Behaviour.OK for customer in CUSTOMERS for service in PATHS
        }
        self.port = 0
        self._runner: web.AppRunner | None = None

    def set(self, customers: list[str], service: str, behaviour: Behaviour) -> None:
        for customer in customers:
            self.behaviour[(customer, service)] = behaviour

    def recover(self) -> None:
        for key in self.behaviour:
            self.behaviour[key] = Behaviour.OK

    def url(self, service: str) -> str:
        """The check URL of ``service`` with the config's ``{customer.id}`` placeholder."""
        return f"http://127.0.0.1:{self.port}/{{customer.id}}/{PATHS[service]}"

    async def _answer(self, request: web.Request) -> web.Response:
        customer, rest = request.match_info["customer"], request.match_info["rest"]
        service = next((s for s, path in PATHS.items() if path == rest), None)
        if customer not in CUSTOMERS or service is None:
            raise web.HTTPNotFound()
        behaviour = self.behaviour[(customer, service)]
        if behaviour is Behaviour.FAILING:
            return web.Response(status=503, text="Service Unavailable")
        if behaviour is Behaviour.SLOW:
            await asyncio.sleep(SLOW_SECONDS)
        if service == "entra-signin":
            return web.json_response({"issuer": f"https://sts.example/{customer}/v2.0"})
        return web.Response(text="OK")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{customer}/{rest:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
