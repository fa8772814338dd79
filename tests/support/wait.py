"""Waiting in tests without a fixed sleep: poll the condition the test waits for.

- :func:`wait_until`: call a condition until it returns something truthy and return that
  value; an AssertionError naming what was awaited once the timeout has passed.
- :func:`async_wait_until`: the same inside an event loop (the loop keeps running between
  looks).
- :func:`returns_of`: record what each call of an object's method returned, so that a test
  can wait for "a round of a background loop ran after this" (the Task Manager's
  ``tick``, a performer's ``claim_next``) instead of sleeping for a round's length.
- :func:`hold`: the one wait whose subject is wall-clock time itself (an outage of a given
  length): time passes while an invariant is checked throughout.

The only module of the tests that sleeps; everything else waits through it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT = 10.0
"""Seconds before a wait gives up, unless the test says otherwise."""
INTERVAL = 0.05
"""Seconds between two looks at the condition."""


def _describe(message: str | Callable[[], str]) -> str:
    return message if isinstance(message, str) else message()


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = TIMEOUT,
    message: str | Callable[[], str] = "the condition",
    *,
    interval: float = INTERVAL,
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy;
    that value. After ``timeout`` seconds (the condition is looked at once more at the
    end) an AssertionError saying what was awaited: ``message``, or what it returns when
    it is a callable (for a message that shows the last state seen). An exception the
    condition raises ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(message)}")
        time.sleep(interval)


async def async_wait_until(
    condition: Callable[[], T | None],
    timeout: float = TIMEOUT,
    message: str | Callable[[], str] = "the condition",
    *,
    interval: float = INTERVAL,
) -> T:
    """:func:`wait_until` for a coroutine: the event loop runs between two looks."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {_describe(message)}")
        await asyncio.sleep(interval)


def returns_of(obj: object, method: str) -> list[Any]:
    """Replace ``obj.method`` (on this instance only) by a wrapper that appends what each
    call returned to the list returned here, once the call is over. For loops that look
    the method up on every round (``worker.tick``, ``self.claim_next``)."""
    returned: list[Any] = []
    real = getattr(obj, method)

    def recording(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        returned.append(result)
        return result

    setattr(obj, method, recording)
    return returned


def hold(seconds: float, still_true: Callable[[], bool], *, interval: float = 0.5) -> None:
    """Let ``seconds`` of wall-clock time pass, asserting ``still_true()`` every
    ``interval`` seconds and once more at the end. Only for a test whose subject is a
    length of time on something that has no clock to move (a real process kept down for a
    minute); to wait *for* something, use :func:`wait_until`."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert still_true()
        time.sleep(min(interval, max(0.0, until - time.monotonic())))
    assert still_true()
