"""Running the services' ASGI apps on free loopback ports inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from shared.ops.embedded import free_port
from shared.runtime.settings import MeshSettings


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run an ASGI app (lifespan included) on a free loopback port in this event loop; yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        # Longer than a service's own bounded stop (hooks, then the bus): a server abandoned mid-shutdown
        # would leave consumers running in this event loop, taking later tests' events. Should it come
        # to that, every task's stack says where the shutdown hung.
        done, _ = await asyncio.wait({task}, timeout=60)
        if not done:
            for pending in asyncio.all_tasks():
                pending.print_stack(file=sys.stderr)
            task.cancel()
            raise TimeoutError(f"the app served at port {port} did not shut down within 60 s")
        task.result()


@contextlib.asynccontextmanager
async def mesh(settings: MeshSettings, services: tuple[str, ...]) -> AsyncIterator[dict[str, str]]:
    """Several services' apps in this event loop, each on its own port; yields their URLs by name."""
    urls = {}
    async with contextlib.AsyncExitStack() as stack:
        for name in services:
            app = importlib.import_module(f"services.{name}.app").create_app(settings)
            urls[name] = await stack.enter_async_context(serve(app))
        yield urls
