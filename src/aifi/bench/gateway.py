"""Gateway benchmark (``aifi bench gateway``): the hospital gateway against two references
on the same machine in the same run.

1. **C-STORE ingest** of CT instances (512×512, 16-bit, ~0.5 MB) over one association from
   DCMTK's ``storescu``, into
   - a bare pynetdicom SCP that only writes each data set to a file with fsync
     (:mod:`aifi.bench.bare_scp`: the ceiling for a Python SCP here),
   - DCMTK's ``storescp`` (with ``TCP_NODELAY=1``: with DCMTK's default, Nagle's algorithm
     holds it at a few tens of instances/s),
   - the gateway (``aifi gateway serve``) with pseudonymisation, durable storage and
     forwarding to a hub (``aifi serve``) all running — twice: with the hub at normal
     priority, and with the hub in Linux's SCHED_IDLE class (the headline: in a hospital
     the hub runs on another machine, and here it should take only what the gateway leaves).
   Printed: instances/s of each, gateway ÷ bare SCP (target ≥ 0.75) and gateway ÷
   storescp, how long after the last C-STORE response the forwarder had sent the last
   instance to the hub, and the CPU per instance of the gateway's receiving process, its
   workers' process and the hub. The forwarder must never be the bottleneck: on a core of
   its own (``1000 / its CPU ms per instance``) it must forward more instances per second
   than the gateway received.
2. **Pseudonymisation CPU** per CT instance (header only; pixel data not decoded),
   measured in this process with :class:`aifi.gateway.deid.Pseudonymiser`. Target < 1 ms.
3. **Gateway memory** while a ~1 GB CT study passes through (received, stored,
   pseudonymised, forwarded): the peak proportional set size (PSS) of its two processes,
   in which the pages they share count once; their RSS added up is printed beside it.
   Target < 300 MB.
4. **Hand X-ray round trip**: from the end of its association to the re-identified
   skeletal-age result in the PACS (a bare SCP standing in for it), minus the product's
   own compute (its ``analyze()``, timed in the product process). Target < 2 s.

Both sides use the same client (``storescu``) so the ratios mean something on a shared,
noisy machine. The hub runs in development mode (no authentication) with its
de-identification guard on, so everything the gateway sends is checked there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pydicom import dcmread
from pydicom.uid import generate_uid

from aifi.bench.process import RssSampler, process_cpu, server_cpu
from aifi.conformance.dcmtk import dcmtk_tool, require_dcmtk_tool
from aifi.gateway.serve import gateway_subprocess
from aifi.hub.serve import free_port, serve_subprocess, wait_for_port

GATEWAY_AE = "AIFI-GW"


@dataclass
class GatewayBenchConfig:
    ct_instances: int = 300
    big_study_gigabytes: float = 1.0
    hand_studies: int = 5
    rounds: int = 3
    """Rounds of (bare SCP, gateway), one after the other: the ratio is the median of the
    rounds' ratios (the machine's speed drifts between runs)."""
    workdir: Path | None = None


@dataclass
class GatewayBenchResults:
    rates: dict[str, float] = field(default_factory=dict)
    """C-STORE instances/s per SCP (``bare pynetdicom``, ``storescp``, ``gateway``)."""
    round_ratios: list[float] = field(default_factory=list)
    """Gateway ÷ bare SCP in each round (bare SCP and gateway measured one after the other)."""
    rate_hub_normal_priority: float = 0.0
    """The gateway's C-STORE rate with the hub at the same CPU priority as everything else
    on this machine (the headline rate runs it niced, as if on its own machine)."""
    forward_lag_seconds: float = 0.0
    forward_rate: float = 0.0
    gateway_cpu_ms_per_instance: float = 0.0
    receive_cpu_ms_per_instance: float = 0.0
    """The gateway's receiving process (DIMSE SCP, durable storage, index)."""
    worker_cpu_ms_per_instance: float = 0.0
    """Its workers' process (pseudonymisation, forwarding, completion signal, purge)."""
    hub_cpu_ms_per_instance: float = 0.0
    pseudonymise_cpu_ms: float = 0.0
    """The action engine on one CT header (pixel data not decoded)."""
    pseudonymise_file_cpu_ms: float = 0.0
    """The whole Part 10 file in and out (pydicom's reading and writing included)."""
    peak_rss_mb: float = 0.0
    """Peak proportional set size (PSS) of the gateway's processes: shared pages once."""
    peak_rss_sum_mb: float = 0.0
    """Peak of their resident set sizes added up (shared pages once per process)."""
    big_study_mb: float = 0.0
    round_trips: list[tuple[float, float]] = field(default_factory=list)
    """(seconds from association end to the result in the PACS, product compute seconds)."""
    notes: list[str] = field(default_factory=list)


# -- corpus -------------------------------------------------------------------------------


def ct_corpus(folder: Path, count: int) -> list[Path]:
    """``count`` CT instances of one study as Part 10 files: one generated slice, copied
    with new SOP Instance UIDs (fast, and the header is as a scanner's)."""
    from aifi.conformance.synthetic import Patient, ct_study

    folder.mkdir(parents=True, exist_ok=True)
    template = dcmread(_first(ct_study(1, patient=Patient(name="BENCH^GATEWAY"))))
    paths = []
    for i in range(count):
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = i + 1
        path = folder / f"ct{i:05d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _first(items: Iterator[bytes]) -> Any:
    import io

    return io.BytesIO(next(items))


# -- processes ----------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1", **extra}


def storescu(port: int, called_ae: str, folder: Path) -> float:
    """Send every file of ``folder`` over one association; seconds it took."""
    start = time.perf_counter()
    subprocess.run(
        [
            require_dcmtk_tool("storescu"),
            "-aet",
            "BENCH",
            "-aec",
            called_ae,
            "+sd",
            "127.0.0.1",
            str(port),
            str(folder),
        ],
        check=True,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


@contextmanager
def _process(args: list[str], log: Path, port: int, env: dict[str, str]) -> Iterator[int]:
    with open(log, "ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        if not wait_for_port(port, process, 60):
            raise RuntimeError(f"{args[0]} did not start: {log.read_text(errors='replace')[-800:]}")
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def bare_scp(folder: Path, log: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of a bare pynetdicom SCP writing into ``folder``."""
    port = free_port()
    args = [sys.executable, "-m", "aifi.bench.bare_scp", str(port), str(folder)]
    with _process(args, log, port, _env()) as pid:
        yield port, pid


@contextmanager
def dcmtk_storescp(folder: Path, log: Path) -> Iterator[int]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [require_dcmtk_tool("storescp"), "--output-directory", str(folder)]
    args += ["--aetitle", "STORESCP", str(port)]
    with _process(args, log, port, _env()):
        yield port


@contextmanager
def gateway_process(
    data_dir: Path, hub_url: str, log: Path, *, pacs: str | None = None
) -> Iterator[tuple[int, int]]:
    """``aifi gateway serve`` in development mode; yields (DIMSE port, pid)."""
    with gateway_subprocess(
        data_dir, hub_url, log, pacs=pacs, ae_title=GATEWAY_AE, env=_env()
    ) as gateway:
        yield gateway.dimse_port, gateway.process.pid


def wait_worker_process(pid: int, timeout: float = 60) -> None:
    """Wait until the gateway's workers' process has started its loops (its CPU time stops
    growing for a moment: imports and start-up are done)."""
    deadline = time.monotonic() + timeout
    last = -1.0
    while time.monotonic() < deadline:
        now = process_cpu(pid, children=True)
        if now and abs(now - last) < 0.005:
            return
        last = now
        time.sleep(0.2)


def set_idle_priority(pid: int) -> None:
    """Put every thread of ``pid`` in Linux's SCHED_IDLE class (only CPU time nothing else
    wants; Linux keeps the policy per thread, threads started later inherit it)."""
    for thread in psutil.Process(pid).threads():
        with contextlib.suppress(OSError):
            os.sched_setscheduler(thread.id, os.SCHED_IDLE, os.sched_param(0))


def instance_states(data_dir: Path) -> dict[str, int]:
    """Counts of the gateway's received instances per state (read-only look at its DB)."""
    with sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT state, count(*) FROM gw_instance GROUP BY state").fetchall()
    return {str(state): int(n) for state, n in rows}


def wait_forwarded(data_dir: Path, count: int, timeout: float) -> float:
    """Wait until ``count`` instances are forwarded; the monotonic time it happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = instance_states(data_dir)
        if states.get("forwarded", 0) >= count:
            return time.monotonic()
        if states.get("failed") or states.get("quarantined"):
            raise RuntimeError(f"the gateway did not forward everything: {states}")
        time.sleep(0.02)
    raise RuntimeError(f"not forwarded within {timeout:g} s: {instance_states(data_dir)}")


# -- measurements -------------------------------------------------------------------------


def measure_pseudonymise(paths: list[Path]) -> tuple[float, float]:
    """CPU ms per CT instance of :class:`Pseudonymiser`: (the action engine on a data set
    read with its pixel data as raw bytes — the header work the target is about; the whole
    file in and out, :meth:`~Pseudonymiser.pseudonymise_file`, which adds pydicom's reading
    and writing of the Part 10 file)."""
    from aifi.gateway.deid import Profile, Pseudonymiser
    from aifi.gateway.deid.files import read_part10

    pseudonymiser = Pseudonymiser(Profile(), b"k" * 32)
    blobs = [p.read_bytes() for p in paths]
    pseudonymiser.pseudonymise_file(blobs[0])  # warm-up: table loading, imports
    datasets = [read_part10(blob) for blob in blobs]
    start = time.process_time()
    for dataset in datasets:
        pseudonymiser.pseudonymise(dataset)
    engine = (time.process_time() - start) * 1000 / len(datasets)
    start = time.process_time()
    for blob in blobs:
        pseudonymiser.pseudonymise_file(blob)
    whole = (time.process_time() - start) * 1000 / len(blobs)
    return engine, whole


def _hand_round_trips(
    workdir: Path, hub_url: str, count: int, say: Callable[[str], None]
) -> list[tuple[float, float]]:
    """Hand radiographs through gateway -> hub -> skeletal-age product -> gateway -> PACS."""
    from aifi.bench.turnaround import read_timings
    from aifi.conformance.pilot_studies import hand_xray

    timings_dir = workdir / "timings"
    timings_dir.mkdir(parents=True, exist_ok=True)
    pacs_dir = workdir / "pacs"
    out: list[tuple[float, float]] = []
    code = (
        "from pathlib import Path; from aifi.bench.turnaround import performer_process; "
        f"performer_process('skeletal-age', {hub_url + '/dicomweb'!r}, 1, "
        f"Path({str(timings_dir / 'skeletal-age.jsonl')!r}))"
    )
    with ExitStack() as stack:
        pacs_port, _ = stack.enter_context(bare_scp(pacs_dir, workdir / "pacs.log"))
        with (workdir / "product.log").open("ab") as log:
            product = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log)
        stack.callback(product.wait)
        stack.callback(product.terminate)
        dimse_port, gateway_pid = stack.enter_context(
            gateway_process(
                workdir / "gateway-hand",
                hub_url,
                workdir / "gateway-hand.log",
                pacs=f"dimse://BARE-SCP@127.0.0.1:{pacs_port}",
            )
        )
        wait_worker_process(gateway_pid)  # steady state: its workers' process is up
        deadline = time.monotonic() + 60
        while not (timings_dir / "skeletal-age.ready").exists():
            if time.monotonic() > deadline or product.poll() is not None:
                raise RuntimeError("the skeletal-age product did not start")
            time.sleep(0.05)
        for n in range(count):
            study = hand_xray(age_years=4 + 2.5 * n)
            folder = workdir / f"hand{n}"
            folder.mkdir()
            for i, ds in enumerate(study):
                ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
            study_uid = str(study[0].StudyInstanceUID)
            before = set(pacs_dir.glob("*.dcm"))
            storescu(dimse_port, GATEWAY_AE, folder)
            sent = time.monotonic()
            arrived = _wait_result(pacs_dir, before, study_uid, sent + 120)
            timings = sorted(read_timings(timings_dir).values())
            compute = timings[-1][1] - timings[-1][0] if timings else 0.0
            out.append((arrived - sent, compute))
            say(f"  hand X-ray {n + 1}: {arrived - sent:.2f} s, product compute {compute:.2f} s")
    return out


def _wait_result(pacs_dir: Path, before: set[Path], study_uid: str, deadline: float) -> float:
    while time.monotonic() < deadline:
        for path in set(pacs_dir.glob("*.dcm")) - before:
            try:
                header = dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: S112 - still being written; look again
                continue
            if header.get("StudyInstanceUID") == study_uid:
                return time.monotonic()
            before.add(path)
        time.sleep(0.01)
    raise RuntimeError(f"no re-identified result for study {study_uid} reached the PACS")


def run(config: GatewayBenchConfig, say: Callable[[str], None] = print) -> GatewayBenchResults:
    results = GatewayBenchResults()
    if not dcmtk_tool("storescu") or not dcmtk_tool("storescp"):
        raise RuntimeError("aifi bench gateway needs DCMTK (apt-get install dcmtk)")
    with ExitStack() as stack:
        if config.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aifi-gw-")))
        else:
            workdir = config.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        say(f"generating {config.ct_instances} CT instances ...")
        corpus = workdir / "ct"
        paths = ct_corpus(corpus, config.ct_instances)
        n = len(paths)

        say("DCMTK storescp (TCP_NODELAY=1) ...")
        with dcmtk_storescp(workdir / "storescp", workdir / "storescp.log") as port:
            results.rates["DCMTK storescp"] = n / storescu(port, "STORESCP", corpus)

        hub_env = {"AIFI_REQUIRE_DEIDENTIFIED": "true"}
        process, hub_url = stack.enter_context(
            serve_subprocess(workdir / "hub", workdir / "hub.log", auth="dev", env=hub_env)
        )
        say("gateway, the hub at normal priority ...")
        gw_dir = workdir / "gateway-hub-normal"
        with gateway_process(gw_dir, hub_url, workdir / "gateway.log") as (port, pid):
            wait_worker_process(pid)
            results.rate_hub_normal_priority = n / storescu(port, GATEWAY_AE, corpus)
            wait_forwarded(gw_dir, n, 300)
        # The central hub runs on its own machine: here it gets only the CPU the gateway
        # and the modality leave (SCHED_IDLE), so that the gateway is measured, not the hub.
        set_idle_priority(process.pid)
        receive = worker = hub = lag = 0.0
        bare_rates: list[float] = []
        gateway_rates: list[float] = []
        forward_seconds: list[float] = []
        for r in range(config.rounds):
            say(f"round {r + 1}/{config.rounds}: bare pynetdicom SCP (write + fsync) ...")
            with bare_scp(workdir / f"bare{r}", workdir / "bare.log") as (port, _):
                bare_rates.append(n / storescu(port, "BARE-SCP", corpus))
            say(f"round {r + 1}/{config.rounds}: gateway (pseudonymise + store + forward) ...")
            gw_dir = workdir / f"gateway{r}"
            with gateway_process(gw_dir, hub_url, workdir / "gateway.log") as (port, pid):
                wait_worker_process(pid)
                receive_before = process_cpu(pid, children=False)
                worker_before = process_cpu(pid, children=True)
                hub_before = server_cpu(process.pid)
                start = time.monotonic()
                seconds = storescu(port, GATEWAY_AE, corpus)
                gateway_rates.append(n / seconds)
                done = wait_forwarded(gw_dir, n, 300)
                receive += process_cpu(pid, children=False) - receive_before
                worker += process_cpu(pid, children=True) - worker_before
                hub += server_cpu(process.pid) - hub_before
                lag = max(lag, done - (start + seconds))
                forward_seconds.append(done - start)
            # Both SCPs' folders go after their round. Keeping only the gateway's made
            # the kernel time of each gateway round grow (0.6 -> 1.3 -> 2.3 ms per instance
            # over three rounds, the bare SCP's steady), most likely because the page
            # cache then needs memory the VM has never touched, which costs its kernel.
            shutil.rmtree(workdir / f"bare{r}", ignore_errors=True)
            shutil.rmtree(gw_dir, ignore_errors=True)
        total = n * config.rounds
        results.round_ratios = [g / b for g, b in zip(gateway_rates, bare_rates, strict=True)]
        results.rates["bare pynetdicom SCP"] = statistics.median(bare_rates)
        results.rates["gateway"] = statistics.median(gateway_rates)
        results.receive_cpu_ms_per_instance = receive * 1000 / total
        results.worker_cpu_ms_per_instance = worker * 1000 / total
        results.gateway_cpu_ms_per_instance = (receive + worker) * 1000 / total
        results.hub_cpu_ms_per_instance = hub * 1000 / total
        results.forward_lag_seconds = max(0.0, lag)
        results.forward_rate = n / statistics.median(forward_seconds)

        say("pseudonymisation CPU ...")
        results.pseudonymise_cpu_ms, results.pseudonymise_file_cpu_ms = measure_pseudonymise(
            paths[: min(n, 200)]
        )

        say(f"a {config.big_study_gigabytes:g} GB study through the gateway ...")
        big = workdir / "big"
        big_paths = ct_corpus(big, max(1, int(config.big_study_gigabytes * 1e9 / 525_000)))
        results.big_study_mb = sum(p.stat().st_size for p in big_paths) / 1e6
        big_dir = workdir / "gateway-big"
        with (
            gateway_process(big_dir, hub_url, workdir / "gateway-big.log") as (port, pid),
            RssSampler(pid, proportional=True) as sampler,
            RssSampler(pid) as rss_sum,
        ):
            storescu(port, GATEWAY_AE, big)
            wait_forwarded(big_dir, len(big_paths), 900)
        results.peak_rss_mb = sampler.peak / 1e6
        results.peak_rss_sum_mb = rss_sum.peak / 1e6
        shutil.rmtree(big, ignore_errors=True)

        if config.hand_studies:
            say("hand X-ray round trips ...")
            results.round_trips = _hand_round_trips(
                workdir / "hand", hub_url, config.hand_studies, say
            )
        del process
    return results


def report(results: GatewayBenchResults) -> str:
    rates = results.rates
    bare = rates.get("bare pynetdicom SCP", 0.0)
    dcmtk = rates.get("DCMTK storescp", 0.0)
    gateway = rates.get("gateway", 0.0)
    lines = [
        "C-STORE ingest, CT, one association from storescu (instances/s; bare SCP and "
        "gateway: median of the rounds):"
    ]
    lines += [f"  {name:<22} {rate:8.1f}" for name, rate in rates.items()]
    if results.round_ratios:
        per_round = ", ".join(f"{ratio:.2f}" for ratio in results.round_ratios)
        lines.append(
            f"  gateway / bare pynetdicom SCP  {statistics.median(results.round_ratios):5.2f}x  "
            f"(target >= 0.75; median of the rounds: {per_round})"
        )
    elif bare:
        lines.append(f"  gateway / bare pynetdicom SCP  {gateway / bare:5.2f}x  (target >= 0.75)")
    if dcmtk:
        lines.append(f"  gateway / DCMTK storescp       {gateway / dcmtk:5.2f}x")
    if results.rate_hub_normal_priority:
        normal = results.rate_hub_normal_priority
        lines.append(
            f"  (the hub at idle priority, as if on its own machine; at normal priority the "
            f"gateway took {normal:.1f}/s{f', {normal / bare:.2f}x' if bare else ''})"
        )
    lines.append(
        f"  forwarded to the hub: {results.forward_rate:.1f} instances/s end to end; the last "
        f"one {results.forward_lag_seconds:.2f} s after the last C-STORE response"
    )
    lines.append(
        f"  CPU per instance: gateway {results.gateway_cpu_ms_per_instance:.2f} ms (receiving "
        f"{results.receive_cpu_ms_per_instance:.2f}, workers "
        f"{results.worker_cpu_ms_per_instance:.2f}: pseudonymise + forward); the hub "
        f"{results.hub_cpu_ms_per_instance:.2f} ms"
    )
    if results.worker_cpu_ms_per_instance and gateway:
        # The workers' process runs on a core of its own (a gateway machine has two or
        # more): it keeps up when its CPU time per instance is shorter than the time the
        # receiving side takes per instance.
        capacity = 1000 / results.worker_cpu_ms_per_instance
        relative = results.worker_cpu_ms_per_instance / (results.receive_cpu_ms_per_instance or 1)
        verdict = "not the bottleneck" if capacity > gateway else "THE BOTTLENECK"
        lines.append(
            f"  the forwarder is {verdict}: on a core of its own its process would forward "
            f"{capacity:.0f} instances/s, the gateway received {gateway:.0f}/s (its CPU per "
            f"instance is {relative:.2f}x the receiving process's)"
        )
    lines.append(
        f"pseudonymisation CPU per CT instance: {results.pseudonymise_cpu_ms:.3f} ms header "
        f"(target < 1); {results.pseudonymise_file_cpu_ms:.3f} ms with the Part 10 file read "
        "and written"
    )
    lines.append(
        f"gateway memory while a {results.big_study_mb:.0f} MB study passes: peak "
        f"{results.peak_rss_mb:.0f} MB PSS of its two processes (target < 300); their RSS "
        f"added up (shared pages twice): {results.peak_rss_sum_mb:.0f} MB"
    )
    if results.round_trips:
        totals = [t for t, _ in results.round_trips]
        overhead = [t - c for t, c in results.round_trips]
        lines.append(
            "hand X-ray, association end -> re-identified result in the PACS: "
            f"p50 {statistics.median(totals):.2f} s, max {max(totals):.2f} s; minus the "
            f"product's compute: p50 {statistics.median(overhead):.2f} s, max "
            f"{max(overhead):.2f} s (target < 2)"
        )
    lines += results.notes
    return "\n".join(lines)


def to_json(results: GatewayBenchResults) -> str:
    return json.dumps(results.__dict__, indent=2)
