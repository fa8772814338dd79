"""The hospital gateway as a real process, a PHI-planted corpus and the scanner that looks
for it (tests only; issue 15, the end-to-end privacy and robustness tests).

- :func:`gateway_process`: ``aifi gateway serve`` as a child process on free ports, its
  ``/healthz`` waited for; read-only looks into its SQLite database.
- :class:`HubProcess`: ``aifi serve`` (:func:`aifi.hub.serve.serve_subprocess`) that a test
  can stop and start again on the same port and data folder; its own ``aifi.*`` loggers
  at DEBUG and uvicorn's at INFO, into one log file that the scan reads.
- :func:`planted_study`: a pilot study (:mod:`aifi.conformance.pilot_studies`, so that the
  routing rules and the reference products work on it) with identifiers planted on top: a
  distinctive value in every attribute of PS3.15 Table E.1-1 that the chosen profile does
  not keep and that a generator can fill by its VR (rows of
  :func:`aifi.gateway.deid.table.rows`), the same inside nested sequences and private
  elements, the patient's name and identifiers inside the descriptions.
- :class:`Scanner`: every planted string (case-insensitive; UTF-8, Latin-1, UTF-16, JSON
  escapes), every original UID and every planted date (DICOM and ISO spelling) in bytes,
  files and folders.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.uid import generate_uid

from aifi.conformance.dcmtk import require_dcmtk_tool
from aifi.gateway.deid import Profile
from aifi.gateway.deid.table import Action, resolve, rows
from aifi.gateway.serve import gateway_subprocess
from aifi.hub.serve import serve_subprocess

GATEWAY_AE = "AIFI-GW"
MODALITY_AE = "ZZMODALITY"

# -- the hub ------------------------------------------------------------------------------

_SITECUSTOMIZE = """\
import logging
logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
logging.getLogger("aifi").setLevel(logging.DEBUG)
"""


class HubProcess:
    """``aifi serve`` on a fixed port and data folder that can be stopped and started again
    (the same database, files and clients); authentication on (``auth="builtin"``)."""

    def __init__(self, data_dir: Path, log: Path, port: int, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.log = log
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        logging_dir = log.parent / "hub-logging"
        logging_dir.mkdir(parents=True, exist_ok=True)
        (logging_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        self.env = {"PYTHONPATH": str(logging_dir), **env}
        self._stack: ExitStack | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._stack is None, "the hub is running"
        stack = ExitStack()
        self.process, url = stack.enter_context(
            serve_subprocess(
                self.data_dir,
                self.log,
                port=self.port,
                auth="builtin",
                env=self.env,
                log_level="info",
            )
        )
        assert url == self.url
        self._stack = stack

    @property
    def running(self) -> bool:
        return self._stack is not None

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def __enter__(self) -> HubProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the gateway --------------------------------------------------------------------------


@dataclass
class GatewayProcess:
    """A running ``aifi gateway serve``."""

    process: subprocess.Popen[bytes]
    url: str
    dimse_port: int
    data_dir: Path
    log: Path

    def status(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/api/v1/gateway/status", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """A read-only query of the gateway's database (its own connection)."""
        with sqlite3.connect(f"file:{self.data_dir / 'gateway.db'}?mode=ro", uri=True) as db:
            db.execute("PRAGMA busy_timeout = 5000")
            return list(db.execute(sql, args).fetchall())

    def states(self) -> dict[str, int]:
        rows_ = self.query("SELECT state, count(*) FROM gw_instance GROUP BY state")
        return {str(state): int(n) for state, n in rows_}

    def pseudo_study(self, original: str) -> str | None:
        found = self.query(
            "SELECT pseudo_study_instance_uid FROM gw_study WHERE study_instance_uid = ?", original
        )
        return str(found[0][0]) if found and found[0][0] else None

    def pseudonyms(self) -> set[str]:
        """Every UID pseudonym the gateway handed to the hub."""
        return {str(p) for (p,) in self.query("SELECT pseudo FROM gw_uid_map")}


@contextmanager
def gateway_process(
    data_dir: Path,
    hub_url: str,
    log: Path,
    *,
    credentials: Path | None = None,
    pacs: str | None = None,
    config: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[GatewayProcess]:
    """``aifi gateway serve`` on free ports (the gateway's DIMSE and HTTP side), started
    the way a hospital starts it (:func:`aifi.gateway.serve.gateway_subprocess`); stopped
    (SIGTERM, then SIGKILL) afterwards. ``config``: the YAML configuration's text."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config_file = None
    if config is not None:
        config_file = data_dir.parent / f"{data_dir.name}.yaml"
        config_file.write_text(config)
    child_env = {**_base_env(), "AIFI_GATEWAY_FSYNC": "false", **(env or {})}
    with gateway_subprocess(
        data_dir,
        hub_url,
        log,
        credentials=credentials,
        pacs=pacs,
        config_file=config_file,
        ae_title=GATEWAY_AE,
        env=child_env,
    ) as spawned:
        yield GatewayProcess(spawned.process, spawned.url, spawned.dimse_port, data_dir, log)


def _base_env() -> dict[str, str]:
    import os

    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(port: int, files: Iterable[Path], *, calling: str = MODALITY_AE) -> None:
    """DCMTK storescu: every file over one association to the gateway (fails the test on
    any C-STORE failure)."""
    completed = subprocess.run(
        [
            require_dcmtk_tool("storescu"),
            "-aet",
            calling,
            "-aec",
            GATEWAY_AE,
            "127.0.0.1",
            str(port),
            *[str(f) for f in files],
        ],
        env=_base_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


# -- the PHI-planted corpus ---------------------------------------------------------------

STRING_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
BYTE_VRS = frozenset({"OB", "OW", "UN", "OB or OW"})
DATE_WINDOW_START = date(1946, 3, 1)
"""Planted dates are consecutive days from here: a window narrower than the smallest date
offset of the profile (365 days), so no date shifted as the profile says can equal another
planted date, and a date found by the scan is a leak, not a coincidence."""
#: Attributes the pilot study needs as they are (the instance's own UIDs, which are
#: originals anyway, and what the hub and the products need to work on it).
KEEP_AS_GENERATED = frozenset(
    {
        0x00080016,  # SOP Class UID
        0x00080018,  # SOP Instance UID
        0x0020000D,  # Study Instance UID
        0x0020000E,  # Series Instance UID
        0x00200052,  # Frame of Reference UID
        0x00080005,  # Specific Character Set
        0x00080060,  # Modality
        0x00280301,  # Burned In Annotation
    }
)
#: Attributes :meth:`_Planter.plant` sets itself (the patient's identity).
SET_LAST = frozenset({0x00100010, 0x00100020, 0x00080050, 0x00100030, 0x00101002})
#: Private block planted at the top level and inside sequence items.
PRIVATE_CREATOR = "ZZPHI HOSPITAL PRIVATE"


@dataclass(frozen=True, slots=True)
class PlantedPatient:
    """The identity of a planted study: distinctive, never real."""

    family: str
    given: str
    patient_id: str
    accession: str
    charset: str
    """Specific Character Set the study is written in."""

    @property
    def name(self) -> str:
        return f"{self.family}^{self.given}"


HAND_PATIENT = PlantedPatient(
    "ZZPHI-NAME-7391", "ZZÉLODIE", "ZZPID-55012", "ZZACC-8812", "ISO_IR 192"
)
CT_PATIENT = PlantedPatient(
    "ZZPHI-MÜLLER-4411", "ZZJÖRG", "ZZPID-66023", "ZZACC-9923", "ISO_IR 100"
)


@dataclass
class Planted:
    """What a corpus holds that must never leave the hospital."""

    strings: set[str] = field(default_factory=set)
    dates: set[date] = field(default_factory=set)
    uids: set[str] = field(default_factory=set)
    """Every original UID: the instances' own and every planted one."""
    sop_instance_uids: set[str] = field(default_factory=set)
    series_instance_uids: set[str] = field(default_factory=set)
    study_instance_uids: set[str] = field(default_factory=set)
    rows_filled: int = 0

    def update(self, other: Planted) -> None:
        self.strings |= other.strings
        self.dates |= other.dates
        self.uids |= other.uids
        self.sop_instance_uids |= other.sop_instance_uids
        self.series_instance_uids |= other.series_instance_uids
        self.study_instance_uids |= other.study_instance_uids
        self.rows_filled = max(self.rows_filled, other.rows_filled)


class _Planter:
    """Fills data sets; ``serial`` numbers the markers and dates (a study's instances get
    the same ones, :func:`planted_study`), every UID is new."""

    def __init__(self, profile: Profile, patient: PlantedPatient, planted: Planted) -> None:
        self.table = resolve(profile.options)
        self.patient = patient
        self.planted = planted
        self.serial = 0

    def marker(self) -> str:
        """A distinctive ASCII core (found by the scan in any encoding of a value)."""
        self.serial += 1
        value = f"ZZPHI{self.serial:04d}Q"
        self.planted.strings.add(value)
        return value

    def date(self) -> str:
        self.serial += 1
        day = DATE_WINDOW_START + timedelta(days=self.serial % 300)
        self.planted.dates.add(day)
        return day.strftime("%Y%m%d")

    def uid(self) -> str:
        uid = str(generate_uid())
        self.planted.uids.add(uid)
        return uid

    def _kept(self, tag: int) -> bool:
        action = self.table.lookup(tag)
        return action is None or action is Action.K

    def value(self, tag: int, vr: str, current: object) -> object | None:
        """The planted value of ``tag`` (None: leave it alone)."""
        action = self.table.lookup(tag)
        if vr in STRING_VRS:
            if action is Action.C:
                # A descriptor: what it said (routing reads it), the patient's name and
                # identifiers and a date, and a marker (Clean Descriptors must drop them).
                kept = str(current) if isinstance(current, str) and current else "CT"
                p = self.patient
                if vr in ("SH", "CS", "AE"):
                    return f"{p.family[:5]} {self.marker()}"
                if vr == "LO":
                    return f"{kept[:12]} {p.family} {p.given} {self.marker()}"
                return f"{kept} {p.family} {p.given} {p.patient_id} 05.01.2023 {self.marker()}"
            marker = self.marker()
            if vr == "UR":
                return f"urn:{marker}"
            if vr == "PN":
                return f"{marker}^ZZGIVEN{marker[5:9]}"
            if vr == "AE":
                return marker
            return {
                0x00101040: f"{marker} Lindenlaan 17, 3584 Utrecht",  # Patient's Address
                0x00102154: f"030-{marker}",  # Patient's Telephone Numbers
                0x00080081: f"{marker} Ziekenhuisweg 1, 3584 Utrecht",  # Institution Address
            }.get(tag, marker)
        if vr == "UI":
            return self.uid()
        if vr == "DA":
            return self.date()
        if vr == "DT":
            return self.date()  # date precision: the date part is the whole value
        if vr in BYTE_VRS:
            return self.marker().encode("ascii")
        return None

    def item(self, depth: int, *, reference: bool = False) -> Dataset:
        """A sequence item with identifiers, a private element, (once) a nested sequence of
        other patient IDs and, in a sequence of references (``reference``), a Referenced
        SOP Instance UID (elsewhere it would be invalid: a code sequence item referencing
        an instance makes the results that carry it over refuse, PS3.3 C.7.2.2)."""
        item = Dataset()
        item.add_new(0x0040A123, "PN", f"{self.marker()}^ZZITEM")  # Person Name
        if reference:
            item.add_new(0x00081155, "UI", self.uid())  # Referenced SOP Instance UID
        item.add_new(0x00100020, "LO", self.marker())  # Patient ID
        item.add_new(0x00190010, "LO", PRIVATE_CREATOR)
        item.add_new(0x00191001, "LO", self.marker())
        if depth < 2:
            nested = Dataset()
            nested.PatientID = self.marker()
            nested.IssuerOfPatientID = self.marker()
            nested.add_new(0x00190010, "LO", PRIVATE_CREATOR)
            nested.add_new(0x00191002, "LO", self.marker())
            item.OtherPatientIDsSequence = [nested]
        return item

    def plant(self, ds: Dataset) -> int:
        """Fill ``ds``; returns how many table rows were filled."""
        filled = 0
        for row in rows():
            if "x" in row.tag or "g" in row.tag:
                continue  # wildcard and private rows: planted separately below
            tag = int(row.tag[1:5] + row.tag[6:10], 16)
            if tag >> 16 in (0x0000, 0x0002, 0x0004) or tag in KEEP_AS_GENERATED | SET_LAST:
                continue  # command, file meta, directory records; the study's own UIDs
            if self._kept(tag):
                continue  # the profile keeps it (patient characteristics): not PHI here
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
            if vr == "SQ":
                name = keyword_for_tag(tag)
                reference = name.startswith("Referenced") or name.startswith("Source")
                ds.add_new(tag, "SQ", [self.item(1, reference=reference)])
                filled += 1
                continue
            current = ds[tag].value if tag in ds else None
            value = self.value(tag, vr, current)
            if value is not None:
                ds.add_new(tag, "OB" if vr == "OB or OW" else vr, value)
                filled += 1
        # The patient's identity (Table E.1-1 rows too, set last so that they win).
        p = self.patient
        ds.SpecificCharacterSet = p.charset
        ds.PatientName = p.name
        ds.PatientID = p.patient_id
        ds.AccessionNumber = p.accession
        ds.PatientBirthDate = self.date()
        ds.OtherPatientIDsSequence = [self.item(1)]
        # Overlay comments (a wildcard row) and private elements at the top level.
        ds.add_new(0x60004000, "LT", f"{p.family} {self.marker()}")
        ds.add_new(0x00290010, "LO", PRIVATE_CREATOR)
        ds.add_new(0x00291001, "LO", f"{p.name} {self.marker()}")
        ds.add_new(0x00291002, "SQ", [self.item(1)])
        ds.add_new(0x00291003, "UN", f"{p.patient_id} {self.marker()}".encode())
        return filled


def planted_study(
    datasets: list[Dataset], patient: PlantedPatient, planted: Planted, *, serial: int = 0
) -> list[Dataset]:
    """``datasets`` (one study of :mod:`aifi.conformance.pilot_studies`) with identifiers
    planted on top under the AIFI default profile; ``planted`` collects them. Markers are
    numbered from ``serial`` (give each study of a corpus its own range); UIDs are new
    everywhere."""
    planter = _Planter(Profile(), patient, planted)
    for ds in datasets:
        # The same markers and dates in every instance of the study, as a real study
        # repeats its patient and study attributes (re-identification restores them).
        planter.serial = serial
        planted.rows_filled = max(planted.rows_filled, planter.plant(ds))
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            planted.uids.add(str(ds[keyword].value))
        if "FrameOfReferenceUID" in ds:
            planted.uids.add(str(ds.FrameOfReferenceUID))
        planted.sop_instance_uids.add(str(ds.SOPInstanceUID))
        planted.series_instance_uids.add(str(ds.SeriesInstanceUID))
        planted.study_instance_uids.add(str(ds.StudyInstanceUID))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.SourceApplicationEntityTitle = MODALITY_AE
    planted.strings.update(
        {patient.family, patient.given, patient.name, patient.patient_id, patient.accession}
    )
    planted.strings.update({PRIVATE_CREATOR, "ZZITEM", MODALITY_AE})
    return datasets


# -- the scan -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    where: str
    what: str
    context: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what!r} in …{self.context}…"


def _encodings(text: str) -> set[bytes]:
    """``text`` as it may be written: UTF-8, Latin-1, UTF-16 (both byte orders), JSON's
    ``\\uXXXX`` escapes; each in its own, lower and upper case."""
    out: set[bytes] = set()
    for variant in {text, text.lower(), text.upper(), text.casefold()}:
        for codec in ("utf-8", "latin-1", "utf-16-le", "utf-16-be"):
            try:
                out.add(variant.encode(codec))
            except UnicodeEncodeError:
                continue
        escaped = json.dumps(variant)[1:-1]
        out.add(escaped.encode("ascii"))
        out.add(escaped.lower().encode("ascii"))
    return out


_MARKER = re.compile(rb"zzphi[0-9]{4}q", re.IGNORECASE)
_UID = re.compile(rb"[0-9]+(?:\.[0-9]+)+")
#: A date (YYYYMMDD, YYYY-MM-DD, YYYY.MM.DD) that does not start inside a longer number; it
#: may be followed by digits (a DT's time, or the next element's tag in binary DICOM).
_DATE = re.compile(rb"(?<![0-9])([0-9]{4})[-.]?([0-9]{2})[-.]?([0-9]{2})")


class Scanner:
    """Looks for every planted string, date and original UID in bytes.

    Fast enough for thousands of planted values: the markers (``ZZPHInnnnQ``), UIDs and
    dates are found by one pattern each and looked up in sets; the few other strings
    (names, IDs) are searched in every encoding. Bytes are also searched with their NUL
    bytes removed, which turns UTF-16 text into ASCII."""

    def __init__(self, planted: Planted) -> None:
        self.markers = {s.casefold() for s in planted.strings if _MARKER.fullmatch(s.encode())}
        self.others: list[tuple[str, re.Pattern[bytes]]] = []
        for text in sorted(planted.strings):
            if text.casefold() in self.markers:
                continue
            alternatives = b"|".join(re.escape(e) for e in sorted(_encodings(text)))
            self.others.append((text, re.compile(alternatives, re.IGNORECASE)))
        self.dates = {d.strftime("%Y%m%d") for d in planted.dates}
        self.uids = {u.encode() for u in planted.uids}

    def _hits(self, data: bytes) -> Iterator[tuple[str, bytes, int, int]]:
        """(what, the bytes it was found in, start, end) of every planted value in ``data``."""
        for variant in (data, data.replace(b"\x00", b"")) if b"\x00" in data else (data,):
            for match in _MARKER.finditer(variant):
                if match.group().decode().casefold() in self.markers:
                    yield match.group().decode(), variant, match.start(), match.end()
            for match in _UID.finditer(variant):
                if match.group() in self.uids:
                    yield match.group().decode(), variant, match.start(), match.end()
            for match in _DATE.finditer(variant):
                if b"".join(match.groups()).decode() in self.dates:
                    yield match.group().decode(), variant, match.start(), match.end()
        for text, pattern in self.others:
            found = pattern.search(data)
            if found is not None:
                yield text, data, found.start(), found.end()

    def scan(self, data: bytes, where: str) -> list[Finding]:
        found: dict[str, Finding] = {}
        for what, source, start, end in self._hits(data):
            if what not in found:
                context = source[max(0, start - 40) : end + 40].decode("latin-1")
                found[what] = Finding(where, what, context.replace("\n", " "))
        return list(found.values())

    def scan_tree(self, root: Path) -> tuple[list[Finding], int]:
        """Every file under ``root``; (findings, files scanned)."""
        findings: list[Finding] = []
        count = 0
        for path in sorted(root.rglob("*")):
            if path.is_file():
                count += 1
                findings += self.scan(path.read_bytes(), str(path.relative_to(root.parent)))
        return findings, count

    def found(self, data: bytes) -> set[str]:
        """Which planted values ``data`` holds (the sanity check of the scan itself);
        markers and UIDs as written, dates as YYYYMMDD or ISO."""
        return {what for what, _, _, _ in self._hits(data)}
