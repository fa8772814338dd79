"""Keep the gateway's memory flat while large studies pass.

Both gateway processes handle buffers of half a megabyte and more (a CT data set as
received, a pseudonymised copy, a STOW-RS request of up to 4 MiB). glibc's malloc serves
such a buffer from a fresh mapping and returns it on ``free`` — until the first such buffer
is freed: from then on its *dynamic* mmap threshold has risen above that size, the buffers
come from the heap, and freed ones stay in the process (``aifi bench gateway``: tens of MB
more while a study passes). :func:`return_large_buffers` fixes the threshold (which turns
the dynamic adjustment off, mallopt(3)), so large buffers go back to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
"""mallopt(3) parameter number (glibc <malloc.h>)."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's own starting value: buffers this large or larger are mapped, and unmapped when
freed."""


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD_BYTES`; False where there is no
    glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
