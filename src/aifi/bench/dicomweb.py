"""DICOMweb benchmark: aifi-hub against Orthanc (with its DICOMweb plugin), same machine,
same run, same client code, so the ratios mean something on a shared, noisy machine.

Measured for each server:

- STOW-RS throughput (instances/s, MB/s) for CT-like (512×512, 16-bit, ~0.5 MB) instances
  at 1 and 10 instances per request and concurrency 1 and 4, and for DX-like (~10 MB)
  instances at concurrency 1 and 4;
- QIDO-RS latency p50/p95 for a fixed query mix over ≥ 100,000 indexed instances;
- WADO-RS retrieve throughput (MB/s) of a CT study at concurrency 1 and 4;
- the server process's peak RSS while one STOW-RS request streams a ~1 GB study;
- for STOW-RS and WADO-RS, the CPU time each server used (user + system, worker processes
  included) per instance or per MB: steadier than throughput on a shared machine, and it
  shows which server is bound by its CPU.

When nginx is installed, the same WADO-RS response bytes are also served as a static file
by nginx (sendfile, one worker per core) to the same client: the machine's ceiling for
that measurement, so a ratio target can be checked against what is attainable at all.
For STOW-RS the same is done with :mod:`aifi.bench.store_only`, a Python server on
uvicorn that only writes, fsyncs and renames each request body: the most a Python hub can
reach on the machine with its instances on disk.

The hub runs as its own ``aifi serve`` process (embedded SQLite, fsync on: an acknowledged
instance is on disk); Orthanc runs from the Debian package with default storage settings.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
from pydicom import dcmread

from aifi.bench.process import RssSampler, server_cpu
from aifi.bench.qido_corpus import QidoCorpus, qido_corpus
from aifi.bench.store_only import NAME as STORE_ONLY
from aifi.bench.store_only import store_only_process
from aifi.conformance.synthetic import Patient, ct_study, dx_study
from aifi.dicomweb import multipart
from aifi.hub.serve import free_port, serve_subprocess, wait_for_port

DICOM_ACCEPT = 'multipart/related; type="application/dicom"'


@dataclass
class Target:
    name: str
    dicomweb: str
    pid: int


@dataclass
class BenchConfig:
    ct_per_config: int = 120
    dx_per_config: int = 8
    qido_instances: int = 100_000
    qido_repeats: int = 60
    wado_repeats: int = 3
    rss_gigabytes: float = 1.0
    with_orthanc: bool = True
    hub_workers: int = 1
    workdir: Path | None = None


@dataclass
class Results:
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, metric: str, target: str, value: float, unit: str) -> None:
        self.rows.append({"metric": metric, "target": target, "value": value, "unit": unit})

    def value(self, metric: str, target: str) -> float | None:
        for row in self.rows:
            if row["metric"] == metric and row["target"] == target:
                return float(row["value"])
        return None

    def metrics(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            if row["metric"] not in seen:
                seen.append(row["metric"])
        return seen


# -- servers ------------------------------------------------------------------------------


@contextmanager
def hub_process(data_dir: Path, workers: int = 1) -> Iterator[Target]:
    """The hub as its own ``aifi serve`` process (embedded SQLite), logging to hub.log.

    In development mode (no authentication), explicitly: the figures are compared with
    Orthanc's, which runs here without authentication too (same client code, no token on
    either side); the token check's cost is measured by ``aifi bench turnaround``, which
    runs with authentication on."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with serve_subprocess(data_dir, data_dir.parent / "hub.log", workers=workers, auth="dev") as (
        process,
        url,
    ):
        yield Target("aifi-hub", url + "/dicomweb", process.pid)


@contextmanager
def orthanc_process(workdir: Path) -> Iterator[Target]:
    from aifi.conformance.orthanc import OrthancPeer

    with OrthancPeer(workdir=workdir, request_timeout=600) as peer:
        yield Target("orthanc", peer.dicomweb_url, peer.pid)


NGINX_CONF = """\
{user}worker_processes {workers};
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp;
  sendfile on;
  tcp_nopush on;
  server {{ listen 127.0.0.1:{port}; root {root}/www; }}
}}
"""


@contextmanager
def static_ceiling(workdir: Path, body: bytes) -> Iterator[str | None]:
    """``body`` served as a static file by nginx (sendfile, a worker per core): the URL,
    or ``None`` when nginx is not installed. A C server that only copies a cached file to
    the socket is the most any server can reach with this client on this machine."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )
    if nginx is None:
        yield None
        return
    root = workdir / "nginx"
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "www" / "study").write_bytes(body)
    port = free_port()
    conf = root / "nginx.conf"
    # As root, nginx's workers would drop to an account that cannot read a private workdir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    workers = psutil.cpu_count() or 1
    conf.write_text(NGINX_CONF.format(user=user, workers=workers, root=root, port=port))
    error_log = str(root / "error.log")
    process = subprocess.Popen([nginx, "-e", error_log, "-c", str(conf), "-p", str(root)])
    try:
        if not wait_for_port(port, process, 10):
            raise RuntimeError(f"nginx did not start (see {root / 'error.log'})")
        yield f"http://127.0.0.1:{port}/study"
    finally:
        process.terminate()
        process.wait(10)


def _fetch_body(url: str) -> bytes:
    with httpx.Client(timeout=600) as client:
        response = client.get(url, headers={"Accept": DICOM_ACCEPT})
        response.raise_for_status()
        return response.content


# -- measurements -------------------------------------------------------------------------


RETRIES: list[str] = []
"""Requests sent again after a keep-alive race (reported with the results)."""


def _stow(client: httpx.Client, target: Target, files: list[bytes]) -> None:
    """One STOW-RS request. A connection the server closed as idle just as the client
    reused it ("disconnected without sending a response") is retried once: re-sending
    identical instances is harmless (both servers answer it as stored)."""
    boundary = multipart.new_boundary()
    body = multipart.encode([("application/dicom", f) for f in files], boundary)
    headers = {
        "Content-Type": multipart.content_type("application/dicom", boundary),
        "Accept": "application/dicom+json",
    }
    try:
        response = client.post(target.dicomweb + "/studies", content=body, headers=headers)
    except httpx.RemoteProtocolError as exc:
        RETRIES.append(f"{target.name}: {exc}")
        response = client.post(target.dicomweb + "/studies", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(
            f"{target.name} STOW-RS answered {response.status_code}: {response.text[:300]}"
        )


def _batches(files: list[bytes], size: int) -> list[list[bytes]]:
    return [files[i : i + size] for i in range(0, len(files), size)]


def measure_stow(
    target: Target, files: list[bytes], per_request: int, concurrency: int
) -> tuple[float, float]:
    """(instances/s, MB/s) for storing ``files`` in requests of ``per_request``."""
    batches = _batches(files, per_request)
    clients = [httpx.Client(timeout=600) for _ in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(
            pool.map(
                lambda ib: _stow(clients[ib[0] % concurrency], target, ib[1]), enumerate(batches)
            )
        )
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    return len(files) / elapsed, sum(map(len, files)) / 1e6 / elapsed


def _fetch_all(url: str) -> int:
    """GET ``url`` and count the body bytes, reading into one reused buffer.

    ``http.client`` with ``readinto`` costs the client far less CPU per MB than a
    feature-rich client: on a 2-core machine the client shares the cores with the server,
    and its overhead would otherwise cap both servers' figures alike."""
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=600)
    try:
        connection.request("GET", parsed.path, headers={"Accept": DICOM_ACCEPT})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"WADO-RS {url} answered {response.status}")
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        total = 0
        while True:
            n = response.readinto(view)
            if not n:
                return total
            total += n
    finally:
        connection.close()


def measure_wado(target: Target, study_uids: list[str], concurrency: int, repeats: int) -> float:
    """MB/s retrieving whole studies as multipart/related application/dicom."""
    urls = [f"{target.dicomweb}/studies/{uid}" for uid in study_uids] * repeats
    return measure_fetch(urls, concurrency)


def measure_fetch(urls: list[str], concurrency: int) -> float:
    """MB/s GETting ``urls`` with ``concurrency`` connections at a time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(_fetch_all, urls))
    elapsed = time.perf_counter() - start
    return total / 1e6 / elapsed


def measure_big_study_rss(target: Target, gigabytes: float) -> tuple[float, float]:
    """(peak RSS MB, seconds) while ONE STOW-RS request streams a study of ``gigabytes``."""
    slices = max(1, int(gigabytes * 1e9 / 525_540))
    boundary = multipart.new_boundary()

    def body() -> Iterator[bytes]:
        for data in ct_study(slices, patient=Patient(patient_id="BENCH-1GB")):
            yield multipart.part_header(boundary, "application/dicom")
            yield data
            yield multipart.part_separator()
        yield multipart.closing(boundary)

    with RssSampler(target.pid) as sampler, httpx.Client(timeout=1800) as client:
        start = time.perf_counter()
        response = client.post(
            target.dicomweb + "/studies",
            content=body(),
            headers={
                "Content-Type": multipart.content_type("application/dicom", boundary),
                "Accept": "application/dicom+json",
            },
        )
        elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{target.name} 1 GB STOW-RS answered {response.status_code}")
    return sampler.peak / 1e6, elapsed


# -- QIDO data and query mix ----------------------------------------------------------------


def load_corpus(targets: list[Target], files: Iterable[bytes], batch: int = 100) -> None:
    """Send the corpus to every target, 4 requests at a time, in batches of ``batch``."""
    clients = {t.name: httpx.Client(timeout=600) for t in targets}
    pending: list[bytes] = []

    def flush(chunk: list[bytes]) -> None:
        for t in targets:
            _stow(clients[t.name], t, chunk)

    with ThreadPoolExecutor(4) as pool:
        futures = []
        for data in files:
            pending.append(data)
            if len(pending) == batch:
                futures.append(pool.submit(flush, pending))
                pending = []
                if len(futures) > 16:
                    futures.pop(0).result()
        if pending:
            futures.append(pool.submit(flush, pending))
        for f in futures:
            f.result()
    for c in clients.values():
        c.close()


def measure_qido(
    target: Target, corpus: QidoCorpus, repeats: int, seed: int = 11
) -> dict[str, list[float]]:
    rng = random.Random(seed)
    timings: dict[str, list[float]] = {}
    with httpx.Client(timeout=60) as client:
        client.get(target.dicomweb + "/studies?limit=1")  # warm-up
        for _ in range(repeats):
            for kind, query in corpus.queries(rng):
                start = time.perf_counter()
                response = client.get(
                    target.dicomweb + query, headers={"Accept": "application/dicom+json"}
                )
                timings.setdefault(kind, []).append((time.perf_counter() - start) * 1000)
                if response.status_code not in (200, 204):
                    raise RuntimeError(f"{target.name} QIDO {query} → {response.status_code}")
    return timings


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the run ------------------------------------------------------------------------------


def run(config: BenchConfig, say: Callable[[str], None] = print) -> Results:
    results = Results()
    with ExitStack() as stack:
        root = config.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="aifi-bench-"))
        )
        (root / "hub").mkdir(parents=True, exist_ok=True)
        targets = [
            stack.enter_context(hub_process(root / "hub" / "data", workers=config.hub_workers))
        ]
        if config.with_orthanc:
            from aifi.conformance.orthanc import orthanc_unavailable

            reason = orthanc_unavailable()
            if reason:
                say(f"Orthanc not available ({reason}); measuring aifi-hub alone")
            else:
                targets.append(stack.enter_context(orthanc_process(root / "orthanc")))
        pid, url = stack.enter_context(
            store_only_process(root / "store-only" / "files", free_port())
        )
        store_only = Target(STORE_ONLY, url, pid)
        names = ", ".join(f"{t.name} (pid {t.pid})" for t in [*targets, store_only])
        say(f"servers: {names}")

        # STOW-RS, CT-like, per request × concurrency; fresh instances for every run.
        for per_request, concurrency in [(1, 1), (10, 1), (1, 4), (10, 4)]:
            files = list(ct_study(config.ct_per_config))
            for t in [*targets, store_only]:
                cpu = server_cpu(t.pid)
                ips, mbps = measure_stow(t, files, per_request, concurrency)
                cpu = server_cpu(t.pid) - cpu
                label = f"STOW CT {per_request}/req c{concurrency}"
                results.add(label + " inst/s", t.name, ips, "inst/s")
                results.add(label + " MB/s", t.name, mbps, "MB/s")
                results.add(label + " CPU ms/inst", t.name, cpu / len(files) * 1e3, "ms")
                say(f"{label}: {t.name} {ips:.1f} inst/s, {mbps:.1f} MB/s")
        for concurrency in (1, 4):
            files = list(dx_study(config.dx_per_config))
            for t in [*targets, store_only]:
                ips, mbps = measure_stow(t, files, 1, concurrency)
                results.add(f"STOW DX 1/req c{concurrency} MB/s", t.name, mbps, "MB/s")
                say(f"STOW DX c{concurrency}: {t.name} {ips:.1f} inst/s, {mbps:.1f} MB/s")

        # WADO-RS: retrieve CT studies stored above (same study on both servers).
        wado_files = list(ct_study(100, patient=Patient(patient_id="BENCH-WADO")))
        wado_uid = str(dcmread(io.BytesIO(wado_files[0]), stop_before_pixels=True).StudyInstanceUID)
        for t in targets:
            measure_stow(t, wado_files, 10, 2)
        for concurrency in (1, 4):
            for t in targets:
                cpu, start = server_cpu(t.pid), time.perf_counter()
                mbps = measure_wado(t, [wado_uid], concurrency, config.wado_repeats * concurrency)
                megabytes = mbps * (time.perf_counter() - start)
                cpu = server_cpu(t.pid) - cpu
                results.add(f"WADO study c{concurrency} MB/s", t.name, mbps, "MB/s")
                results.add(
                    f"WADO study c{concurrency} CPU ms/MB", t.name, cpu / megabytes * 1e3, "ms"
                )
                say(f"WADO c{concurrency}: {t.name} {mbps:.1f} MB/s")
        hub_body = _fetch_body(f"{targets[0].dicomweb}/studies/{wado_uid}")
        with static_ceiling(root, hub_body) as static_url:
            if static_url is None:
                say("nginx not installed: no static-file ceiling measured")
            for concurrency in (1, 4) if static_url else ():
                urls = [static_url or ""] * (config.wado_repeats * concurrency)
                mbps = measure_fetch(urls, concurrency)
                results.add(f"WADO study c{concurrency} MB/s", CEILING, mbps, "MB/s")
                say(f"WADO c{concurrency}: same bytes as a static file from nginx {mbps:.1f} MB/s")

        # QIDO-RS over ≥ 100k instances.
        corpus, corpus_files = qido_corpus(config.qido_instances)
        start = time.perf_counter()
        load_corpus(targets, corpus_files)
        say(
            f"QIDO corpus: {config.qido_instances} instances loaded into "
            f"{len(targets)} server(s) in {time.perf_counter() - start:.0f} s"
        )
        for t in targets:
            timings = measure_qido(t, corpus, config.qido_repeats)
            every = [v for vs in timings.values() for v in vs]
            results.add("QIDO p50 ms", t.name, _pct(every, 0.5), "ms")
            results.add("QIDO p95 ms", t.name, _pct(every, 0.95), "ms")
            for kind, values in timings.items():
                results.add(f"QIDO {kind} p95 ms", t.name, _pct(values, 0.95), "ms")
            say(
                f"QIDO: {t.name} p50 {_pct(every, 0.5):.1f} ms, p95 {_pct(every, 0.95):.1f} ms "
                f"(mean {statistics.fmean(every):.1f} ms)"
            )

        # Peak RSS while one request streams a ~1 GB study.
        for t in targets:
            peak, seconds = measure_big_study_rss(t, config.rss_gigabytes)
            results.add(f"peak RSS {config.rss_gigabytes:g} GB STOW MB", t.name, peak, "MB")
            results.add(f"{config.rss_gigabytes:g} GB STOW seconds", t.name, seconds, "s")
            say(
                f"{config.rss_gigabytes:g} GB study: {t.name} peak RSS {peak:.0f} MB, "
                f"{seconds:.1f} s"
            )
    if RETRIES:
        say(f"retried after a keep-alive race: {len(RETRIES)} request(s): {RETRIES[:3]}")
    return results


LOWER_IS_BETTER = ("ms", "MB", "s")
CEILING = "nginx-static"
"""Target name of the static-file ceiling rows."""
CEILINGS = {
    CEILING: "the same bytes served as a static file by nginx (sendfile), same client",
    STORE_ONLY: "a Python server on uvicorn that only writes, fsyncs and renames each body",
}


def report(results: Results) -> str:
    """A table: each metric for both servers and the ratio hub/Orthanc (or Orthanc/hub where
    lower is better), so that > 1 always means the hub is better."""
    lines = [f"{'metric':<34} {'aifi-hub':>12} {'orthanc':>12} {'hub advantage':>14}"]
    for metric in results.metrics():
        hub = results.value(metric, "aifi-hub")
        other = results.value(metric, "orthanc")
        unit = next(r["unit"] for r in results.rows if r["metric"] == metric)
        ratio = "-"
        if hub and other:
            better = other / hub if unit in LOWER_IS_BETTER else hub / other
            ratio = f"{better:.2f}x"
        lines.append(f"{metric:<34} {hub or 0:>12.1f} {other or 0:>12.1f} {ratio:>14}")
    for name, meaning in CEILINGS.items():
        ceilings = [
            m
            for m in results.metrics()
            if results.value(m, name) and not m.endswith(("CPU ms/inst", "CPU ms/MB"))
        ]
        if not ceilings:
            continue
        lines.append("")
        lines.append(f"ceiling ({name}): {meaning}")
        for metric in ceilings:
            ceiling = results.value(metric, name) or 0.0
            hub = results.value(metric, "aifi-hub")
            other = results.value(metric, "orthanc")
            reach = f"; hub {hub / ceiling:.2f} of it" if hub else ""
            if other:
                reach += f"; 1.5x Orthanc = {1.5 * other:.0f} ({1.5 * other / ceiling:.2f} of it)"
            lines.append(f"  {metric:<32} {ceiling:>10.1f}{reach}")
    return "\n".join(lines)


def to_json(results: Results) -> str:
    return json.dumps(results.rows, indent=2)
