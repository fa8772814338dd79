"""What a process costs while a benchmark runs: CPU seconds (with or without its children)
and its resident memory sampled in a thread. Shared by ``aifi bench dicomweb`` and
``aifi bench gateway``."""

from __future__ import annotations

import threading

import psutil


def process_cpu(pid: int, *, children: bool) -> float:
    """CPU seconds (user + system) used so far by the process ``pid`` alone, or by its
    children alone (a process that ends meanwhile counts nothing)."""
    process = psutil.Process(pid)
    total = 0.0
    for p in process.children(recursive=True) if children else [process]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the process ``pid`` and its children
    (a multi-worker hub is a supervisor and its workers)."""
    return process_cpu(pid, children=False) + process_cpu(pid, children=True)


class RssSampler:
    """Samples the resident set size of a process and its children every 20 ms; keeps
    the peak. ``proportional``: their proportional set size (PSS) instead, in which a page
    the processes share (a library, pages a parent shares with its child) counts once
    rather than once per process."""

    def __init__(self, pid: int, *, proportional: bool = False) -> None:
        self.process = psutil.Process(pid)
        self.proportional = proportional
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # A multi-worker hub is a supervisor and its workers: count them all.
                family = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(self._size(p) for p in family))
            except psutil.Error:
                return
            self._stop.wait(0.02)

    def _size(self, process: psutil.Process) -> int:
        if self.proportional:
            return int(process.memory_full_info().pss)
        return int(process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
