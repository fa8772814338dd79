"""The audit trail's background task, for the app's lifespan: the syslog export kept up to
date (when an audit record repository is configured) and, on shutdown, the trail's last
queued rows written before the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import anyio.to_thread

from aifi.hub.audit.syslog import SyslogExporter
from aifi.hub.audit.trail import AuditTrail

log = logging.getLogger(__name__)


async def run_audit_loop(exporter: SyslogExporter | None, poll_seconds: float) -> None:
    """Keep the syslog export (when configured) up to date, every ``poll_seconds``, until
    cancelled. An error in one round is logged; the next goes on from the cursor, so
    nothing is lost across restarts."""
    while True:
        if exporter is not None:
            try:
                await anyio.to_thread.run_sync(exporter.export_pending)
            except Exception as exc:
                log.warning("audit syslog export failed (retried): %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(poll_seconds)


def start_audit_loop(
    trail: AuditTrail, exporter: SyslogExporter | None, poll_seconds: float
) -> Callable[[], Awaitable[None]]:
    """Start :func:`run_audit_loop` as a task; returns the coroutine function that stops it,
    writes the trail's queued rows and closes the exporter (for the app's lifespan)."""
    task = asyncio.create_task(run_audit_loop(exporter, poll_seconds))

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(trail.close)  # the last queued rows are written
        if exporter is not None:
            exporter.close()

    return stop


__all__ = ["run_audit_loop", "start_audit_loop"]
