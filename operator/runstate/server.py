"""The operator's HTTP endpoints on one port: /metrics, /healthz, /readyz (aiohttp).

Started from kopf's startup handler with AppRunner/TCPSite (never `web.run_app`, which would
fight kopf for the event loop and the signal handlers) and stopped at cleanup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runstate.metrics import REGISTRY

Check = Callable[[], Awaitable[str | None]]  # None = fine, else what is wrong


def build_app(live: Check, ready: Check) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Check) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_: web.Request) -> web.Response:
            problem = await check()
            if problem is None:
                return web.Response(text="ok\n")
            return web.Response(status=503, text=problem + "\n")

        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", probe(live))
    app.router.add_get("/readyz", probe(ready))
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app`; returns the runner (to stop it) and the bound port (port 0 picks one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    return runner, bound
