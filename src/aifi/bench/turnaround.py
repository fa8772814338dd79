"""AIR turnaround benchmark: how much of an AI request's turnaround is the hub's own doing.

For ``studies`` mixed pilot studies (hand radiographs of children, extremity radiographs,
contrast chest CTs; positives and negatives) the hub runs as its own ``aifi serve`` process
(embedded SQLite, fsync on, or PostgreSQL with ``--database-url``) with the default routing
rules except a short quiet period. The three reference products work its UPS-RS worklist
over HTTP, each in its own process (as with ``aifi vendors run``) with its own Task
Performers (Triggered Pull), its ``analyze()`` timed there. The studies are stored with
STOW-RS, one every ``interval_seconds``, as a PACS would send them.

Per AI request (one workitem): **turnaround** = from the moment the last STOW-RS response
of its study arrived to the moment the hub holds its validated result (``completed_at`` of
the AI result: results stored, checked at the door, workitem COMPLETED); **hub overhead** =
turnaround − the quiet period − the product's own compute (the time its ``analyze()``
took, measured around the call). What remains is everything the hub and the protocol add:
waiting for the Task Manager's tick, routing, creating the workitem, the event that wakes
the performer, the claim, WADO-RS of the inputs, STOW-RS of the results with validation,
the progress updates and the completion. Target (issue 4): p95 < 1 s.

Authentication is on, as in production: the hub runs with its built-in authorization
server (``auth=builtin``) and every client has its own OAuth2 client
(:mod:`aifi.hub.admin.local_clients`): the PACS's STOW-RS as the hospital, the benchmark's reads
of the routing as the administrator, each product process as a performer client limited
to its product (``private_key_jwt``). So the overhead includes checking a token on every
request and getting tokens (one per client, renewed before they expire).

Both clocks are this machine's wall clock (the hub's UTC timestamps vs ``time.time()``
here). There is no peer to compare with: no other open-source hub runs this chain.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydicom import Dataset

from aifi.dicom_json import DicomJson, first
from aifi.hub.admin.local_clients import LocalClients, register_local_clients
from aifi.hub.api.results import epoch_seconds
from aifi.hub.serve import free_port, serve_subprocess
from aifi.hub.settings import Settings
from aifi.oauth_client import Credentials
from aifi.vendors.performer import Analyzer, Performer, performer_auth
from aifi.vendors.transport import stow_request
from aifi.vendors.workitem import SOP_INSTANCE_UID


@dataclass
class TurnaroundConfig:
    studies: int = 100
    quiet_seconds: float = 1.0
    """Quiet period for every modality during the run (shipped defaults: 10 s DX, 30 s CT)."""
    interval_seconds: float = 1.0
    """A new study every this many seconds (open loop: a PACS does not wait for the AI).
    Well above a hospital's rate (tens of thousands of studies a month is about one a
    minute), and low enough that the products are not saturated: a product's queue is
    its own capacity, not the hub's overhead."""
    performers_per_product: int = 2
    database_url: str | None = None
    workdir: Path | None = None
    seed: int = 20261123


@dataclass
class Request:
    """One AI request: a workitem of a study, and its timings (seconds, wall clock)."""

    workitem_uid: str
    product: str
    study_uid: str
    stored_at: float
    workitem_created_at: float
    completed_at: float
    analyze_start: float
    analyze_end: float
    outcome: str

    @property
    def turnaround(self) -> float:
        return self.completed_at - self.stored_at

    @property
    def compute_seconds(self) -> float:
        return self.analyze_end - self.analyze_start


@dataclass
class TurnaroundResults:
    requests: list[Request] = field(default_factory=list)
    studies: int = 0
    quiet_seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    """Studies whose expected results never came (with the reason seen)."""

    def overheads_ms(self) -> list[float]:
        return [
            (r.turnaround - self.quiet_seconds - r.compute_seconds) * 1000 for r in self.requests
        ]

    def summary(self) -> dict[str, Any]:
        overhead = self.overheads_ms()
        turnaround = [r.turnaround * 1000 for r in self.requests]
        compute = [r.compute_seconds * 1000 for r in self.requests]
        routing = [
            (r.workitem_created_at - r.stored_at - self.quiet_seconds) * 1000 for r in self.requests
        ]
        before = [(r.analyze_start - r.workitem_created_at) * 1000 for r in self.requests]
        after = [(r.completed_at - r.analyze_end) * 1000 for r in self.requests]
        return {
            "studies": self.studies,
            "AI requests": len(self.requests),
            "missing": len(self.missing),
            "quiet period s": self.quiet_seconds,
            "turnaround p50 ms": _pct(turnaround, 0.5),
            "turnaround p95 ms": _pct(turnaround, 0.95),
            "product compute p50 ms": _pct(compute, 0.5),
            "hub overhead p50 ms": _pct(overhead, 0.5),
            "hub overhead p95 ms": _pct(overhead, 0.95),
            "hub overhead max ms": max(overhead, default=0.0),
            "hub overhead mean ms": statistics.fmean(overhead) if overhead else 0.0,
            "  routing p50 ms (after quiet)": _pct(routing, 0.5),
            "  routing p95 ms (after quiet)": _pct(routing, 0.95),
            "  claim + WADO p50 ms": _pct(before, 0.5),
            "  claim + WADO p95 ms": _pct(before, 0.95),
            "  STOW + complete p50 ms": _pct(after, 0.5),
            "  STOW + complete p95 ms": _pct(after, 0.95),
        }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class TimedAnalyzer:
    """An :class:`Analyzer` that times the product's own ``analyze()`` per workitem and
    appends ``{"workitem", "start", "end"}`` (wall clock) as a JSON line to ``out``."""

    def __init__(self, inner: Analyzer, out: Path) -> None:
        self.inner = inner
        self.out = out
        self._lock = threading.Lock()

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        start = time.time()
        try:
            return self.inner.analyze(workitem, inputs)
        finally:
            line = {
                "workitem": first(workitem, SOP_INSTANCE_UID),
                "start": start,
                "end": time.time(),
            }
            with self._lock, self.out.open("a") as out:
                out.write(json.dumps(line) + "\n")


def read_timings(folder: Path) -> dict[str, tuple[float, float]]:
    """Every product's analyze() start and end per workitem UID."""
    timings: dict[str, tuple[float, float]] = {}
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            timings[str(item["workitem"])] = (float(item["start"]), float(item["end"]))
    return timings


def performer_process(
    name: str, dicomweb: str, performers: int, out: Path, credentials: Path | None = None
) -> None:
    """One reference product as its own process (as in production: ``aifi vendors run``),
    ``performers`` Task Performers in threads sharing the product's performer client
    (``credentials``; its token source is thread-safe), its analyze() timed into ``out``;
    runs until terminated."""
    from aifi.vendors.products import reference_product

    product = reference_product(name)
    analyzer = TimedAnalyzer(product.factory(), out)
    auth = performer_auth(Credentials.from_file(credentials) if credentials else None)
    stop = threading.Event()
    threads = []
    with ExitStack() as stack:
        for n in range(performers):
            performer = stack.enter_context(
                Performer(
                    dicomweb, product.code, f"{product.ae_title[:13]}-{n}", analyzer, auth=auth
                )
            )
            thread = threading.Thread(
                target=performer.run, args=(stop,), kwargs={"poll_seconds": 2.0}, daemon=True
            )
            thread.start()
            threads.append(thread)
        (out.parent / f"{name}.ready").touch()
        for thread in threads:
            thread.join()


def _rules(path: Path, quiet: float) -> Path:
    config = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    config["quiet_period_seconds"] = {"DX": quiet, "CR": quiet, "CT": quiet, "default": quiet}
    path.write_text(yaml.safe_dump(config))
    return path


def mixed_studies(count: int, seed: int) -> list[list[Dataset]]:
    """``count`` pilot studies: a third each of hand (bone age + fracture), extremity
    (fracture) and contrast chest CT (pulmonary embolism), half of each positive."""
    from aifi.conformance.pilot_studies import chest_ct, extremity_xray, hand_xray

    rng = random.Random(seed)
    out: list[list[Dataset]] = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            out.append(hand_xray(age_years=rng.uniform(3, 17)))
        elif kind == 1:
            out.append(extremity_xray(fracture=rng.random() < 0.5))
        else:
            out.append(chest_ct(embolism=rng.random() < 0.5))
    return out


def _stow(client: httpx.Client, dicomweb: str, study: list[Dataset]) -> float:
    body, headers = stow_request(study)
    response = client.post(dicomweb + "/studies", content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"STOW-RS answered {response.status_code}: {response.text[:200]}")
    return time.time()


@contextmanager
def _performers(
    dicomweb: str, per_product: int, folder: Path, clients: LocalClients
) -> Iterator[Path]:
    """The three reference products, each its own process with ``per_product`` Task
    Performers and its performer client, working the worklist until the block ends;
    yields the timings folder."""
    from aifi.vendors.products import PRODUCTS

    folder.mkdir(parents=True, exist_ok=True)
    processes = []
    for name, product in PRODUCTS.items():
        credentials = str(clients.performers[product.code])
        code = (
            "from pathlib import Path; "
            "from aifi.bench.turnaround import performer_process; "
            f"performer_process({name!r}, {dicomweb!r}, {per_product}, "
            f"Path({str(folder / (name + '.jsonl'))!r}), Path({credentials!r}))"
        )
        log = (folder / f"{name}.log").open("ab")
        processes.append(
            subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
        )
        log.close()
    try:
        deadline = time.monotonic() + 60
        while not all((folder / f"{name}.ready").exists() for name in PRODUCTS):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the product processes did not start; see {folder}")
            time.sleep(0.1)
        time.sleep(0.5)  # subscriptions and event channels follow
        yield folder
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _expected(base: str, admin: httpx.Client, study_uid: str) -> int:
    """How many products the study was routed to (the routing explanation: ``admin``)."""
    routing = admin.get(f"{base}/api/v1/studies/{study_uid}/routing")
    routing.raise_for_status()
    return max(0, routing.text.count(": MATCH"))


def _results_of(base: str, client: httpx.Client, study_uid: str) -> list[dict[str, Any]]:
    response = client.get(f"{base}/api/v1/results", params={"study": study_uid, "limit": 50})
    response.raise_for_status()
    return list(response.json()["results"])


def run(config: TurnaroundConfig, say: Callable[[str], None] = print) -> TurnaroundResults:
    results = TurnaroundResults(studies=config.studies, quiet_seconds=config.quiet_seconds)
    studies = mixed_studies(config.studies, config.seed)
    with tempfile.TemporaryDirectory(prefix="aifi-bench-turnaround-") as tmp:
        root = config.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rules = _rules(root / "rules.yaml", config.quiet_seconds)
        port = free_port()
        clients = _register_clients(root, port, config.database_url)
        hospital = clients.hospital_auth()
        with serve_subprocess(
            root / "data",
            root / "hub.log",
            database_url=config.database_url,
            rules_file=rules,
            port=port,
            auth="builtin",
            # The generated studies are identified and go straight into the hub; the
            # gateway's benchmark (aifi bench gateway) sends pseudonymised data instead.
            env={"AIFI_REQUIRE_DEIDENTIFIED": "false"},
        ) as (_process, base):
            dicomweb = base + "/dicomweb"
            say(
                f"hub at {base} (auth builtin); quiet period {config.quiet_seconds:g} s; "
                f"{config.studies} studies, one every {config.interval_seconds:g} s"
            )
            products = root / "products"
            with _performers(dicomweb, config.performers_per_product, products, clients) as out:
                stored: dict[str, float] = {}
                hospital.token()  # the PACS has its token before its first study

                def send(study: list[Dataset]) -> None:
                    with httpx.Client(timeout=120, auth=hospital) as client:
                        stored[str(study[0].StudyInstanceUID)] = _stow(client, dicomweb, study)

                start = time.monotonic()
                with ThreadPoolExecutor(8) as pool:
                    for i, study in enumerate(studies):
                        time.sleep(max(0.0, start + i * config.interval_seconds - time.monotonic()))
                        pool.submit(send, study)
                say(f"stored {len(stored)} studies; waiting for their results")
                _collect(base, stored, out, config, results, clients)
    return results


def _register_clients(root: Path, port: int, database_url: str | None) -> LocalClients:
    """The benchmark's OAuth2 clients in the hub's database, before the hub starts."""
    from aifi.vendors.products import PRODUCTS

    settings = Settings(data_dir=root / "data", database_url=database_url or None)
    return register_local_clients(
        settings,
        f"http://127.0.0.1:{port}",
        root / "credentials",
        products=[p.code for p in PRODUCTS.values()],
        label="aifi bench turnaround",
    )


def _collect(
    base: str,
    stored: dict[str, float],
    timings_folder: Path,
    config: TurnaroundConfig,
    results: TurnaroundResults,
    clients: LocalClients,
) -> None:
    """Wait until every routed request of every study has an AI result, then read the
    hub's timestamps and the products' timings."""
    deadline = time.monotonic() + 120 + 2 * config.studies
    pending = dict(stored)
    done: list[tuple[str, dict[str, Any]]] = []
    with (
        httpx.Client(timeout=60, auth=clients.hospital_auth()) as client,
        httpx.Client(timeout=60, auth=clients.admin_auth()) as admin,
    ):
        expected: dict[str, int] = {}
        while pending and time.monotonic() < deadline:
            for study_uid in list(pending):
                if study_uid not in expected:
                    count = _expected(base, admin, study_uid)
                    if count == 0 and time.time() - stored[study_uid] < config.quiet_seconds + 5:
                        continue
                    expected[study_uid] = count
                found = [r for r in _results_of(base, client, study_uid) if r.get("completed_at")]
                if len(found) < expected[study_uid]:
                    continue
                done += [(study_uid, r) for r in found]
                del pending[study_uid]
            time.sleep(0.2)
        timings = read_timings(timings_folder)
        for study_uid, r in done:
            uid = str(r["workitem_uid"])
            detail = client.get(f"{base}/api/v1/results/{uid}").json()
            analyze_start, analyze_end = timings.get(uid, (0.0, 0.0))
            results.requests.append(
                Request(
                    workitem_uid=uid,
                    product=str(r["product"]),
                    study_uid=study_uid,
                    stored_at=stored[study_uid],
                    workitem_created_at=epoch_seconds(str(detail["timings"]["workitem_created"])),
                    completed_at=epoch_seconds(str(r["completed_at"])),
                    analyze_start=analyze_start,
                    analyze_end=analyze_end,
                    outcome=str(r.get("outcome")),
                )
            )
    results.missing = sorted(pending)


def report(results: TurnaroundResults) -> str:
    lines = [f"{'metric':<32} {'value':>10}"]
    for name, value in results.summary().items():
        lines.append(
            f"{name:<32} {value:>10.1f}" if isinstance(value, float) else f"{name:<32} {value:>10}"
        )
    by_product: dict[str, list[float]] = {}
    for r, overhead in zip(results.requests, results.overheads_ms(), strict=True):
        by_product.setdefault(r.product, []).append(overhead)
    for product, values in sorted(by_product.items()):
        lines.append(
            f"  {product:<14} n={len(values):<4} overhead p50 {_pct(values, 0.5):6.0f} ms, "
            f"p95 {_pct(values, 0.95):6.0f} ms"
        )
    p95 = _pct(results.overheads_ms(), 0.95)
    verdict = "MET" if results.requests and p95 < 1000 and not results.missing else "NOT MET"
    lines.append(f"target: hub overhead p95 < 1 s: {verdict}")
    return "\n".join(lines)


def to_json(results: TurnaroundResults) -> str:
    return json.dumps(
        {
            **results.summary(),
            "missing": results.missing,
            "requests": [
                {
                    "workitem": r.workitem_uid,
                    "product": r.product,
                    "outcome": r.outcome,
                    "turnaround_ms": r.turnaround * 1000,
                    "compute_ms": r.compute_seconds * 1000,
                }
                for r in results.requests
            ],
        },
        indent=2,
    )


__all__ = ["TurnaroundConfig", "TurnaroundResults", "report", "run", "to_json"]
