"""The product under test, in one of three ways:

* ``--run COMMAND``: the vendor's command, with ``{hub}``, ``{dicomweb}`` and
  ``{credentials}`` replaced by the kit hub's base URL, DICOMweb root and the performer
  client's credentials file, and the same values in ``AIFI_HUB``, ``AIFI_DICOMWEB`` and
  ``AIFI_CREDENTIALS``; run by the shell in its own process group (stopped with SIGTERM,
  then SIGKILL), its output in ``product.log`` next to the report;
* ``--wait``: the values printed; the vendor starts the product by hand and the kit waits
  for it to connect;
* ``--push-url URL``: a push-mode product's endpoint. The kit's own adapter
  (:class:`aifi.vendors.push.PushAnalyzer` in a :class:`aifi.vendors.performer.Performer`,
  exactly what production runs for a push product) works the worklist and POSTs the inputs
  to the URL; the product answers the results.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aifi.conformance_kit.performer.kit_hub import KitHub
from aifi.oauth_client import Credentials
from aifi.vendors.performer import Performer, performer_auth
from aifi.vendors.push import PushAnalyzer

STOP_SECONDS = 10.0
PUSH_AE = "AIFI-KIT-PUSH"


@dataclass
class Launch:
    mode: str
    """``run``, ``wait`` or ``push``."""
    command: str | None = None
    push_url: str | None = None


@dataclass
class RunningProduct:
    launch: Launch
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, size: int = 1500) -> str:
        if self.log is None or not self.log.exists():
            return ""
        data = self.log.read_bytes()
        return data[-size:].decode(errors="replace")


def substitutions(hub: KitHub, product: str) -> dict[str, str]:
    return {
        "hub": hub.base_url,
        "dicomweb": hub.dicomweb,
        "credentials": str(hub.credentials(product)),
    }


def expand(command: str, values: dict[str, str]) -> str:
    """``{hub}``, ``{dicomweb}``, ``{credentials}`` replaced (shell-quoted); other braces
    are left as they are (a vendor's command may hold JSON)."""
    for name, value in values.items():
        command = command.replace("{" + name + "}", shlex.quote(value))
    return command


@contextmanager
def running_product(
    launch: Launch, hub: KitHub, product: str, report_dir: Path
) -> Iterator[RunningProduct]:
    values = substitutions(hub, product)
    if launch.mode == "wait":
        yield RunningProduct(launch)
        return
    if launch.mode == "push":
        assert launch.push_url is not None
        yield from _push(launch, hub, product)
        return
    assert launch.command is not None
    log = report_dir / "product.log"
    env = {**os.environ, **{f"AIFI_{name.upper()}": value for name, value in values.items()}}
    env["PYTHONUNBUFFERED"] = "1"
    # The kit's own installation first, so that "aifi vendors run …" in a command names
    # the same aifi-hub whether or not the vendor activated its virtual environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    with open(log, "wb") as out:
        process = subprocess.Popen(  # noqa: S602 - the vendor's command line, by design
            expand(launch.command, values),
            shell=True,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            yield RunningProduct(launch, process, log)
        finally:
            _stop(process)


def _push(launch: Launch, hub: KitHub, product: str) -> Iterator[RunningProduct]:
    assert launch.push_url is not None
    auth = performer_auth(Credentials.from_file(hub.credentials(product)))
    stop = threading.Event()
    with PushAnalyzer(launch.push_url) as analyzer:
        performer = Performer(hub.dicomweb, product, PUSH_AE, analyzer, auth=auth)
        thread = threading.Thread(
            target=performer.run,
            args=(stop,),
            kwargs={"poll_seconds": 1.0},
            name="aifi-kit-push",
            daemon=True,
        )
        thread.start()
        try:
            yield RunningProduct(launch)
        finally:
            stop.set()
            thread.join(timeout=STOP_SECONDS)
            performer.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue
