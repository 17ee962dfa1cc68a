"""Registration and heartbeats: the worker tells the controller who it is, every interval.

Each heartbeat carries the whole WorkerStatus, so a controller that restarted knows this worker
again after one interval. Failures are logged once per outage, not once per beat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from tokenyard.protocol.internal import UnregisterRequest, WorkerStatus

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        client: httpx.AsyncClient,
        controller_url: str,
        status: Callable[[], WorkerStatus],
        interval: float,
    ) -> None:
        self._client = client
        self._url = controller_url.rstrip("/")
        self._status = status
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._controller_reachable: bool | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def beat(self) -> bool:
        """Send one report now; True when the controller took it."""
        status = self._status()
        try:
            response = await self._client.post(
                f"{self._url}/heartbeat", content=status.model_dump_json(), timeout=self._interval
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if self._controller_reachable is not False:
                logger.warning("controller %s unreachable (%s); retrying every %.1fs", self._url, exc, self._interval)
            self._controller_reachable = False
            return False
        if self._controller_reachable is not True:
            logger.info("registered with controller %s as %s", self._url, status.worker_id)
        self._controller_reachable = True
        return True

    async def unregister(self, worker_id: str) -> None:
        try:
            await self._client.post(
                f"{self._url}/unregister",
                content=UnregisterRequest(worker_id=worker_id).model_dump_json(),
                timeout=2.0,
            )
        except httpx.HTTPError as exc:
            logger.warning("could not unregister from %s: %s", self._url, exc)

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self._interval)
