"""The gateway's background workers in their child process
(:mod:`aifi.gateway.worker_process`), as ``aifi gateway serve`` runs them: at idle CPU
priority, no secret on a command line, restarted when they die, and gone when the gateway
is gone — however it ended."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from aifi.gateway.serve import GatewayProcess, gateway_subprocess
from aifi.hub.serve import free_port
from tests.support.wait import wait_until

KEY = "f" * 64


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    env = {**os.environ, "AIFI_GATEWAY_PSEUDONYM_KEY": KEY}
    with gateway_subprocess(
        tmp_path / "gw",
        f"http://127.0.0.1:{free_port()}",  # nobody there: the forwarder just retries
        tmp_path / "gateway.log",
        env=env,
    ) as running:
        yield running


def _worker(gateway: GatewayProcess) -> psutil.Process | None:
    for child in psutil.Process(gateway.process.pid).children():
        try:
            if "aifi.gateway.worker_process" in " ".join(child.cmdline()):
                return child
        except psutil.Error:  # a killed one not reaped yet
            continue
    return None


def test_the_workers_run_at_idle_priority_in_a_child_without_secrets_on_its_command_line(
    gateway: GatewayProcess,
) -> None:
    worker = wait_until(lambda: _worker(gateway), 30, "the workers' process")
    wait_until(
        lambda: os.sched_getscheduler(worker.pid) == os.SCHED_IDLE,
        10,
        "the workers' process to lower its priority",
    )
    assert KEY not in " ".join(worker.cmdline())
    assert KEY not in " ".join(psutil.Process(gateway.process.pid).cmdline())


def test_a_dead_worker_process_is_started_again(gateway: GatewayProcess, tmp_path: Path) -> None:
    first = wait_until(lambda: _worker(gateway), 30, "the workers' process")
    first.send_signal(signal.SIGKILL)
    second = wait_until(
        lambda: (w := _worker(gateway)) is not None and w.pid != first.pid and w,
        30,
        "a new workers' process",
    )
    assert second.is_running()
    assert "starting it again" in (tmp_path / "gateway.log").read_text()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_the_worker_process_ends_with_the_gateway(gateway: GatewayProcess, how: int) -> None:
    worker = wait_until(lambda: _worker(gateway), 30, "the workers' process")
    gateway.process.send_signal(how)
    gateway.process.wait(30)
    wait_until(
        lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE,
        20,
        "the workers' process to end",
    )
