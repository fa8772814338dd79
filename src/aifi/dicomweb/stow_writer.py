"""STOW-RS storing (PS3.18 §10.5): checked instances handed to :meth:`DicomStore.put
<aifi.dicomweb.store.DicomStore.put>` in batches — a failed batch retried instance by
instance so that one bad instance cannot fail its neighbours (:func:`put_isolating`), and the
batches of concurrent requests merged into one call (:class:`StoreWriter`, group commit).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from aifi.dicomweb.instance_checks import (
    CANNOT_UNDERSTAND,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    PartOutcome,
)
from aifi.dicomweb.store import DicomStore, IncomingInstance, StoreOutcome, StoreStatus
from aifi.dicomweb.stow_staging import in_thread

log = logging.getLogger("aifi.dicomweb.stow")

BATCH_SIZE = 64
"""Checked instances handed to one :meth:`DicomStore.put` (one transaction)."""
BATCH_BYTES = 256 * 1024 * 1024
"""…or fewer, once their files add up to this much."""

# -- storing a batch --------------------------------------------------------------------


def _linked(instance: IncomingInstance, attempt: int) -> IncomingInstance:
    """A copy of ``instance`` whose staged file is a fresh hard link (``put`` consumes it)."""
    link = instance.staged_path.with_name(f"{instance.staged_path.name}.{attempt}")
    os.link(instance.staged_path, link)
    return IncomingInstance(
        staged_path=link,
        size=instance.size,
        sha256=instance.sha256,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        header=instance.header,
        metadata=instance.metadata,
    )


def put_isolating(
    store: DicomStore, tenant: str, instances: Sequence[IncomingInstance]
) -> list[StoreOutcome | Exception]:
    """``store.put`` the batch; if it fails, put each instance alone so that only the
    culprits fail. Consumes the staged files (runs in a worker thread)."""
    try:
        if len(instances) == 1:  # nothing to retry: no link needed
            try:
                return list(store.put(tenant, instances))
            except Exception as exc:
                return [exc]
        try:
            return list(store.put(tenant, [_linked(i, 0) for i in instances]))
        except Exception as exc:
            log.warning("STOW-RS: batch of %d failed (%s); storing one by one", len(instances), exc)
        results: list[StoreOutcome | Exception] = []
        for instance in instances:
            try:
                results.extend(store.put(tenant, [_linked(instance, 1)]))
            except Exception as exc:
                results.append(exc)
        return results
    finally:
        for instance in instances:
            instance.staged_path.unlink(missing_ok=True)


def apply_outcome(outcome: PartOutcome, result: StoreOutcome | Exception) -> None:
    if isinstance(result, StoreOutcome):
        if result.status is StoreStatus.CONFLICT:
            outcome.fail(DUPLICATE_SOP_INSTANCE, result.reason or "duplicate SOP Instance UID")
        elif result.status is StoreStatus.REFUSED:
            outcome.fail(result.failure or CANNOT_UNDERSTAND, result.reason or "refused")
        else:
            outcome.stored = True
        return
    if isinstance(result, OSError) and result.errno in (errno.ENOSPC, errno.EDQUOT):
        outcome.fail(OUT_OF_RESOURCES, "out of storage space")
        return
    # no identifiers in logs at INFO and above (issue 6): the UID only at DEBUG
    log.error("STOW-RS: storing an instance failed", exc_info=result)
    log.debug("STOW-RS: the instance that failed is %s", outcome.sop_instance_uid)
    outcome.fail(PROCESSING_FAILURE, "the instance could not be stored")


# -- storing: group commit across requests -----------------------------------------------


@dataclass(slots=True)
class _PutRequest:
    tenant: str
    instances: Sequence[IncomingInstance]
    future: asyncio.Future[list[StoreOutcome | Exception]]


class StoreWriter:
    """Serialises the :meth:`DicomStore.put` calls of concurrent STOW-RS requests and
    merges the batches that are waiting into one call (group commit).

    One write transaction at a time suits the embedded SQLite (a single writer; queued
    writers would otherwise wait on its lock with sleeps), and merging amortises the
    commit's fsync over many small requests (a client sending one instance per request).
    A batch is never split; batches whose SOP Instance UIDs overlap go to separate calls,
    so that the later one meets the earlier one as stored. Instances handed over are
    stored even if their request is cancelled meanwhile (their parts were complete)."""

    def __init__(self, store: DicomStore, max_instances: int = 2 * BATCH_SIZE) -> None:
        self.store = store
        self.max_instances = max_instances
        self.loop = asyncio.get_running_loop()
        self._waiting: deque[_PutRequest] = deque()
        self._task: asyncio.Task[None] | None = None

    async def put(
        self, tenant: str, instances: Sequence[IncomingInstance]
    ) -> list[StoreOutcome | Exception]:
        request = _PutRequest(tenant, instances, self.loop.create_future())
        self._waiting.append(request)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await request.future

    def _next_group(self) -> list[_PutRequest]:
        group = [self._waiting.popleft()]
        uids = {str(i.header.SOPInstanceUID) for i in group[0].instances}
        size = len(group[0].instances)
        while self._waiting:
            candidate = self._waiting[0]
            candidate_uids = {str(i.header.SOPInstanceUID) for i in candidate.instances}
            if (
                candidate.tenant != group[0].tenant
                or size + len(candidate.instances) > self.max_instances
                or not uids.isdisjoint(candidate_uids)
            ):
                break
            group.append(self._waiting.popleft())
            uids |= candidate_uids
            size += len(candidate.instances)
        return group

    async def _run(self) -> None:
        while self._waiting:
            group = self._next_group()
            instances = [i for request in group for i in request.instances]
            try:
                results = await in_thread(put_isolating, self.store, group[0].tenant, instances)
            except BaseException as exc:
                for request in (*group, *self._waiting):
                    if not request.future.done():
                        request.future.set_exception(RuntimeError(f"store writer stopped: {exc!r}"))
                self._waiting.clear()
                raise
            start = 0
            for request in group:
                end = start + len(request.instances)
                if not request.future.done():  # its request may have been cancelled
                    request.future.set_result(results[start:end])
                start = end


_writers: weakref.WeakKeyDictionary[DicomStore, StoreWriter] = weakref.WeakKeyDictionary()


def writer_of(store: DicomStore) -> StoreWriter:
    """The writer of ``store`` on the running event loop."""
    try:
        writer = _writers.get(store)
    except TypeError:  # a store that cannot be weakly referenced: no sharing
        return StoreWriter(store)
    if writer is None or writer.loop is not asyncio.get_running_loop():
        writer = StoreWriter(store)
        _writers[store] = writer
    return writer
