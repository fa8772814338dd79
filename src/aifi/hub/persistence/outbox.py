"""The loop and the retry delay of a durable outbox (PACS deliveries, FHIR notifications and
pushes): one round in a worker thread every ``poll_seconds``, at once when this process queued
something (the worker's doorbell rings after the commit), and again at once after a full
batch, until cancelled. Rows queued by other hub processes wait for the poll; an error in
one round is logged and the loop goes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from aifi.dicomweb.worklist import Doorbell

log = logging.getLogger(__name__)


def retry_delay(attempts: int, first_seconds: float, cap_seconds: float) -> float:
    """Exponential backoff of an outbox row after its ``attempts``-th failed attempt:
    ``first_seconds`` doubled per attempt, at most ``cap_seconds``."""
    return float(min(cap_seconds, first_seconds * 2 ** (attempts - 1)))


class OutboxWorker(Protocol):
    doorbell: Doorbell
    batch_size: int

    def tick(self) -> int:
        """One round; returns how many rows it worked on."""
        ...


async def run_outbox_loop(worker: OutboxWorker, poll_seconds: float, name: str) -> None:
    with worker.doorbell.listen() as bell:
        while True:
            bell.clear()  # before looking: a ring during the round is not lost
            worked = 0
            try:
                worked = await asyncio.to_thread(worker.tick)
            except Exception:
                log.exception("%s round failed", name)
            if worked >= worker.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bell.wait(), poll_seconds)
