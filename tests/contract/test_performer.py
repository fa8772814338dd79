"""The AIW-I Task Performer (aifi.vendors) against a real hub under uvicorn, over real HTTP:
STOW-RS a study, create a workitem over UPS-RS, let the performer claim, retrieve, analyse,
store and complete it — with the reference analyzer, a failing one, and the push adapter
talking to a small real vendor server."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from aifi.dicom_json import DicomJson
from aifi.dicomweb.media import parse_media_type
from aifi.dicomweb.multipart import content_type, encode, new_boundary
from aifi.dicomweb.multipart_reader import read_parts
from aifi.oauth_client import ClientCredentials, Credentials
from aifi.vendors.cli import vendors_app
from aifi.vendors.performer import AnalysisFailed, Performer, performer_auth
from aifi.vendors.push import PushAnalyzer
from aifi.vendors.reference import ReferenceAnalyzer, reference_report
from tests.conftest import LiveServer, run_live_server
from tests.support.auth import register, secured_hub
from tests.support.dicom import make_study, multipart_related, to_bytes
from tests.support.ups import element, new_workitem
from tests.support.wait import returns_of, wait_until

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
PRODUCT = "AIFI-BONEAGE"
STATE = "00741000"
PROGRESS_INFO = "00741002"
REASON = "00741238"
PERFORMED = "00741216"
OUTPUT = "00404033"


@pytest.fixture
def hub(sqlite_live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sqlite_live_server.dicomweb, headers=JSON, timeout=30) as client:
        yield client


def store_study(hub: httpx.Client, per_series: int = 2) -> list[Dataset]:
    study = make_study(n_series=1, per_series=per_series)
    body, ctype = multipart_related(to_bytes(ds) for ds in study)
    response = hub.post(
        "/studies", content=body, headers={"Content-Type": ctype, "Accept": JSON["Accept"]}
    )
    assert response.status_code == 200, response.text
    return study


def create_workitem(
    hub: httpx.Client,
    study: list[Dataset],
    *,
    priority: str = "MEDIUM",
    retrieve_url: str = "absolute",
) -> str:
    """A SCHEDULED workitem (RAD-80) whose Input Information Sequence names ``study``."""
    ds = workitem_request(hub, study, priority=priority, retrieve_url=retrieve_url)
    uid = str(generate_uid())
    response = hub.post(f"/workitems?workitem={uid}", json=ds)
    assert response.status_code == 201, response.headers.get("warning")
    return uid


def workitem_request(
    hub: httpx.Client,
    study: list[Dataset],
    *,
    priority: str = "MEDIUM",
    retrieve_url: str = "absolute",
) -> DicomJson:
    """The DICOM JSON of a new workitem for ``study`` (see :func:`create_workitem`)."""
    first = study[0]
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    ds = new_workitem(study_uid=study_uid, priority=priority, product=PRODUCT)
    item: DicomJson = {
        "0020000D": element("UI", study_uid),
        "0020000E": element("UI", series_uid),
        "00081199": element(
            "SQ",
            *[
                {
                    "00081150": element("UI", str(i.SOPClassUID)),
                    "00081155": element("UI", str(i.SOPInstanceUID)),
                }
                for i in study
            ],
        ),
        "0040E020": element("CS", "DICOM"),
    }
    if retrieve_url != "none":
        url = f"studies/{study_uid}/series/{series_uid}"
        if retrieve_url == "absolute":
            url = f"{str(hub.base_url).rstrip('/')}/{url}"
        item["0040E025"] = element("SQ", {"00081190": element("UR", url)})
    ds["00404021"] = element("SQ", item)
    return ds


def workitem(hub: httpx.Client, uid: str) -> DicomJson:
    response = hub.get(f"/workitems/{uid}")
    assert response.status_code == 200
    [ds] = response.json()
    assert isinstance(ds, dict)
    return ds


def performer(server: LiveServer, analyzer: Any, ae: str = "PERFORMER1") -> Performer:
    return Performer(server.dicomweb, PRODUCT, ae, analyzer, timeout=30, backoff=0.05)


def wado(hub: httpx.Client, path: str) -> list[Dataset]:
    response = hub.get(path, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    boundary = parse_media_type(response.headers["content-type"]).params["boundary"]
    return [dcmread(io.BytesIO(body)) for _h, body in read_parts(response.content, boundary)]


# -- pull with the reference analyzer ---------------------------------------------------------


def test_performer_completes_a_workitem_and_its_result_is_retrievable(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    study = store_study(hub)
    uid = create_workitem(hub, study)
    with performer(sqlite_live_server, ReferenceAnalyzer()) as p:
        assert p.run_once() == "COMPLETED"
        assert p.run_once() is None  # nothing left
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["COMPLETED"]
    done = ds[PERFORMED]["Value"][0]
    assert done["00404050"]["Value"] and done["00404051"]["Value"]
    assert done["00404019"]["Value"][0]["00080100"]["Value"] == [PRODUCT]
    [output] = done[OUTPUT]["Value"]
    study_uid = str(study[0].StudyInstanceUID)
    assert output["0020000D"]["Value"] == [study_uid]
    assert output["0040E020"]["Value"] == ["DICOM"]
    [ref] = output["00081199"]["Value"]
    assert ref["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.88.11"]  # Basic Text SR
    series_uid = output["0020000E"]["Value"][0]
    assert series_uid != str(study[0].SeriesInstanceUID)
    # Retrievable by WADO-RS, findable by QIDO-RS
    [sr] = wado(hub, f"/studies/{study_uid}/series/{series_uid}")
    assert sr.SOPInstanceUID == ref["00081155"]["Value"][0]
    assert sr.PatientID == study[0].PatientID
    assert "Reference analysis of 2 instances (product AIFI-BONEAGE" in (
        sr.ContentSequence[0].TextValue
    )
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence} == {
        i.SOPInstanceUID for i in study
    }
    found = hub.get(f"/studies/{study_uid}/series", params={"Modality": "SR"}).json()
    assert [s["0020000E"]["Value"][0] for s in found] == [series_uid]


@pytest.mark.parametrize("retrieve_url", ["none", "relative"])
def test_without_an_absolute_retrieve_url_the_hub_series_is_used(
    sqlite_live_server: LiveServer, hub: httpx.Client, retrieve_url: str
):
    study = store_study(hub, per_series=3)
    uid = create_workitem(hub, study, retrieve_url=retrieve_url)
    seen: list[int] = []

    class Counting(ReferenceAnalyzer):
        def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
            seen.append(len(inputs))
            return super().analyze(workitem, inputs)

    with performer(sqlite_live_server, Counting()) as p:
        assert p.run_once() == "COMPLETED"
    assert seen == [3]
    assert workitem(hub, uid)[STATE]["Value"] == ["COMPLETED"]


def test_high_priority_is_claimed_before_low(sqlite_live_server: LiveServer, hub: httpx.Client):
    study = store_study(hub)
    low = create_workitem(hub, study, priority="LOW")
    medium = create_workitem(hub, study, priority="MEDIUM")
    high = create_workitem(hub, study, priority="HIGH")
    later_high = create_workitem(hub, study, priority="HIGH")
    not_ready = create_workitem(hub, study, priority="HIGH")
    response = hub.post(f"/workitems/{not_ready}", json={"00404041": element("CS", "INCOMPLETE")})
    assert response.status_code == 200
    with performer(sqlite_live_server, ReferenceAnalyzer()) as p:
        order = []
        while (claimed := p.claim_next()) is not None:
            order.append(claimed.uid)
            p.perform(claimed)
    assert order == [high, later_high, medium, low]  # never the INCOMPLETE one
    assert workitem(hub, not_ready)[STATE]["Value"] == ["SCHEDULED"]


def test_two_performers_racing_for_one_workitem_one_performs(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    study = store_study(hub)
    uid = create_workitem(hub, study)
    calls: list[str] = []
    barrier = threading.Barrier(2)

    class Recording(ReferenceAnalyzer):
        def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
            calls.append(str(workitem["00080018"]["Value"][0]))
            return super().analyze(workitem, inputs)

    results: dict[str, str | None] = {}

    def race(ae: str) -> None:
        with performer(sqlite_live_server, Recording(), ae=ae) as p:
            candidates = p.search()
            barrier.wait()
            claimed = None
            for ds in candidates:
                claimed = p.claim(ds["00080018"]["Value"][0])
            results[ae] = p.perform(claimed) if claimed else None

    threads = [threading.Thread(target=race, args=(ae,)) for ae in ("RACER1", "RACER2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results.values(), key=str) == ["COMPLETED", None]
    assert calls == [uid]
    assert workitem(hub, uid)[STATE]["Value"] == ["COMPLETED"]


def test_analysis_failed_discontinues_with_the_reason(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    study = store_study(hub)
    uid = create_workitem(hub, study)

    class Refusing:
        def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
            raise AnalysisFailed("Hand not visible on the radiograph")

    with performer(sqlite_live_server, Refusing()) as p:
        assert p.run_once() == "CANCELED"
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    progress = ds[PROGRESS_INFO]["Value"][0]
    assert progress[REASON]["Value"] == ["Hand not visible on the radiograph"]
    assert progress["00404052"]["Value"]  # Procedure Step Cancellation DateTime


def test_an_analyzer_bug_discontinues_instead_of_stranding_the_workitem(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    uid = create_workitem(hub, store_study(hub))

    class Broken:
        def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
            raise ZeroDivisionError("division by zero")

    with performer(sqlite_live_server, Broken()) as p:
        assert p.run_once() == "CANCELED"
    reason = workitem(hub, uid)[PROGRESS_INFO]["Value"][0][REASON]["Value"][0]
    assert "ZeroDivisionError" in reason


def test_missing_inputs_discontinue_with_the_wado_status(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    never_stored = make_study(n_series=1, per_series=1)
    uid = create_workitem(hub, never_stored)
    with performer(sqlite_live_server, ReferenceAnalyzer()) as p:
        assert p.run_once() == "CANCELED"
    reason = workitem(hub, uid)[PROGRESS_INFO]["Value"][0][REASON]["Value"][0]
    assert "WADO-RS" in reason and "404" in reason


def waiting_on_its_channel(p: Performer) -> Callable[[], bool]:
    """Before ``p.run`` starts: a condition that holds once the run loop has opened its event
    channel and searched the worklist (nothing to claim), so that it now waits on the
    channel (or its poll interval)."""
    searches = returns_of(p, "claim_next")
    return lambda: p._channel is not None and bool(searches)


def test_triggered_pull_wakes_up_on_the_event_channel(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    study = store_study(hub)
    stop = threading.Event()
    with performer(sqlite_live_server, ReferenceAnalyzer(), ae="TRIGGERED") as p:
        waiting = waiting_on_its_channel(p)
        done: list[int] = []
        thread = threading.Thread(
            target=lambda: done.append(p.run(stop, poll_seconds=60, events=True))
        )
        thread.start()
        try:
            wait_until(waiting, 10, "the performer to subscribe, search once and wait")
            uid = create_workitem(hub, study)
            wait_until(  # far less than the 60 s poll interval
                lambda: workitem(hub, uid)[STATE]["Value"] == ["COMPLETED"],
                15,
                "the workitem to be performed",
                interval=0.1,
            )
        finally:
            stop.set()
            thread.join(timeout=30)
    assert done == [1]
    # The performer unsubscribed on the way out.
    gone = hub.delete("/workitems/1.2.840.10008.5.1.4.34.5/subscribers/TRIGGERED")
    assert gone.status_code == 404


# -- the push adapter against a real vendor server ------------------------------------------------


@dataclass
class Vendor:
    """A tiny AI product under uvicorn: answers each POST with the next scripted status."""

    statuses: list[int] = field(default_factory=lambda: [200])
    received: list[tuple[dict[str, str], list[Dataset]]] = field(default_factory=list)
    url: str = ""

    async def analyze(self, request: Request) -> Response:
        body = await request.body()
        boundary = parse_media_type(request.headers["content-type"]).params["boundary"]
        inputs: list[Dataset] = [
            dcmread(io.BytesIO(part)) for _h, part in read_parts(body, boundary)
        ]
        self.received.append((dict(request.headers), inputs))
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == 200:
            result = reference_report(inputs, "Vendor finding: no fracture", manufacturer="V")
            out_boundary = new_boundary()
            return Response(
                encode([("application/dicom", to_bytes(result))], out_boundary),
                media_type=content_type("application/dicom", out_boundary),
            )
        if status == 204:
            return Response(status_code=204)
        return Response(
            f"model crashed ({status})", status_code=status, headers={"Retry-After": "0"}
        )


@pytest.fixture
def vendor() -> Iterator[Vendor]:
    state = Vendor()

    async def healthz(_request: Request) -> Response:
        return Response("ok")

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/analyze", state.analyze, methods=["POST"]),
        ]
    )
    with run_live_server(app) as server:  # type: ignore[arg-type]
        state.url = server.url + "/analyze"
        yield state


def test_push_adapter_completes_with_the_vendor_result(
    sqlite_live_server: LiveServer, hub: httpx.Client, vendor: Vendor
):
    study = store_study(hub)
    uid = create_workitem(hub, study)
    with (
        PushAnalyzer(vendor.url, backoff=0.01) as push,
        performer(sqlite_live_server, push) as p,
    ):
        assert p.run_once() == "COMPLETED"
    [(headers, inputs)] = vendor.received
    assert {ds.SOPInstanceUID for ds in inputs} == {ds.SOPInstanceUID for ds in study}
    assert headers["aifi-workitem-uid"] == uid
    assert headers["aifi-product"] == PRODUCT
    [output] = workitem(hub, uid)[PERFORMED]["Value"][0][OUTPUT]["Value"]
    sop = output["00081199"]["Value"][0]["00081155"]["Value"][0]
    [sr] = wado(
        hub, f"/studies/{study[0].StudyInstanceUID}/series/{output['0020000E']['Value'][0]}"
    )
    assert sr.SOPInstanceUID == sop
    assert sr.ContentSequence[0].TextValue == "Vendor finding: no fracture"


def test_vendor_500_cancels_with_the_status_in_the_reason(
    sqlite_live_server: LiveServer, hub: httpx.Client, vendor: Vendor
):
    vendor.statuses = [500]
    uid = create_workitem(hub, store_study(hub))
    with (
        PushAnalyzer(vendor.url, backoff=0.01) as push,
        performer(sqlite_live_server, push) as p,
    ):
        assert p.run_once() == "CANCELED"
    assert len(vendor.received) == 1  # 500 is not retried
    reason = workitem(hub, uid)[PROGRESS_INFO]["Value"][0][REASON]["Value"][0]
    assert "HTTP 500" in reason and "model crashed" in reason


def test_vendor_503_is_retried_and_204_completes_without_outputs(
    sqlite_live_server: LiveServer, hub: httpx.Client, vendor: Vendor
):
    vendor.statuses = [503, 204]
    uid = create_workitem(hub, store_study(hub))
    with (
        PushAnalyzer(vendor.url, backoff=0.01) as push,
        performer(sqlite_live_server, push) as p,
    ):
        assert p.run_once() == "COMPLETED"
    assert len(vendor.received) == 2
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["COMPLETED"]
    assert not ds[PERFORMED]["Value"][0][OUTPUT].get("Value")


def test_unreachable_vendor_cancels(sqlite_live_server: LiveServer, hub: httpx.Client):
    from tests.conftest import free_port

    uid = create_workitem(hub, store_study(hub))
    with (
        PushAnalyzer(f"http://127.0.0.1:{free_port()}/analyze", timeout=5) as push,
        performer(sqlite_live_server, push) as p,
    ):
        assert p.run_once() == "CANCELED"
    reason = workitem(hub, uid)[PROGRESS_INFO]["Value"][0][REASON]["Value"][0]
    assert "could not be reached" in reason


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_once_performs_one_workitem(sqlite_live_server: LiveServer, hub: httpx.Client):
    root = typer.Typer()
    root.add_typer(vendors_app, name="performer")
    uid = create_workitem(hub, store_study(hub))
    args = ["performer", "run", "--hub", sqlite_live_server.dicomweb, "--product", PRODUCT]
    result = CliRunner().invoke(root, [*args, "--ae", "CLI", "--once"])
    assert result.exit_code == 0, result.output
    assert "COMPLETED" in result.output
    assert workitem(hub, uid)[STATE]["Value"] == ["COMPLETED"]
    again = CliRunner().invoke(root, [*args, "--once"])
    assert again.exit_code == 1
    assert "No SCHEDULED workitem" in again.output
    helptext = CliRunner().invoke(root, ["performer", "run", "--help"])
    for option in ("--hub", "--product", "--ae", "--push-url", "--once", "--poll"):
        assert option in helptext.output


# -- cancellation and progress ------------------------------------------------------------------


def sr_series(hub: httpx.Client, study: list[Dataset]) -> list[Any]:
    found = hub.get(f"/studies/{study[0].StudyInstanceUID}/series", params={"Modality": "SR"})
    return list(found.json()) if found.status_code == 200 else []


class CancelledWhileAnalysing(ReferenceAnalyzer):
    """Asks the hub to cancel its own workitem (a Task Requester's RAD-88 stand-in) and
    waits until the performer heard the Cancel Requested event, then returns a result."""

    def __init__(self, hub: httpx.Client, reason: str) -> None:
        super().__init__()
        self.hub, self.reason, self.performer = hub, reason, None
        self.heard = False

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        uid = str(workitem["00080018"]["Value"][0])
        body = {REASON: element("LT", self.reason)}
        assert self.hub.post(f"/workitems/{uid}/cancelrequest", json=body).status_code == 202
        assert workitem_state(self.hub, uid) == "IN PROGRESS"  # the hub leaves it to us
        self.heard = wait_until(
            lambda: self.performer is not None and self.performer.cancellation(uid) is not None,
            10,
            "the Cancel Requested event at the performer",
        )
        return super().analyze(workitem, inputs)


def workitem_state(hub: httpx.Client, uid: str) -> str:
    return str(workitem(hub, uid)[STATE]["Value"][0])


def test_cancel_requested_during_analysis_discontinues_without_storing(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    study = store_study(hub)
    uid = create_workitem(hub, study)
    analyzer = CancelledWhileAnalysing(hub, "Wrong patient, study to be split")
    with performer(sqlite_live_server, analyzer) as p:
        analyzer.performer = p  # type: ignore[assignment]
        assert p.run_once() == "CANCELED"
    assert analyzer.heard  # over the workitem's own event channel (run_once)
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    assert ds[PROGRESS_INFO]["Value"][0][REASON]["Value"] == ["Wrong patient, study to be split"]
    assert sr_series(hub, study) == []  # no result stored for a cancelled workitem
    assert PERFORMED not in ds or not ds[PERFORMED].get("Value")


def test_cancel_requested_is_heard_on_the_run_loops_channel(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    study = store_study(hub)
    analyzer = CancelledWhileAnalysing(hub, "Ordered in error")
    stop = threading.Event()
    with performer(sqlite_live_server, analyzer, ae="LOOPING") as p:
        analyzer.performer = p  # type: ignore[assignment]
        waiting = waiting_on_its_channel(p)
        done: list[int] = []
        thread = threading.Thread(target=lambda: done.append(p.run(stop, max_items=1)))
        thread.start()
        wait_until(waiting, 10, "the run loop to open its channel and search once")
        uid = create_workitem(hub, study)
        thread.join(timeout=30)
        stop.set()
    assert done == [1] and analyzer.heard
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    assert ds[PROGRESS_INFO]["Value"][0][REASON]["Value"] == ["Ordered in error"]
    assert sr_series(hub, study) == []


def test_a_workitem_canceled_by_the_task_manager_is_left_alone(
    sqlite_live_server: LiveServer, hub: httpx.Client
):
    from datetime import UTC, datetime, timedelta

    study = store_study(hub)
    worklist = sqlite_live_server.app.state.worklist
    # As the Task Manager creates it: with a product, so a claim gets a run deadline.
    worklist.run_timeouts[PRODUCT] = 15.0
    uid = str(generate_uid())
    worklist.create("default", uid, workitem_request(hub, study), product=PRODUCT)

    class OverDeadline(ReferenceAnalyzer):
        def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
            # The Task Manager's run timeout passes while the analysis runs.
            assert worklist.cancel_by_manager(
                "default",
                uid,
                "Run timeout passed",
                expected_state="IN PROGRESS",
                due=datetime.now(UTC) + timedelta(days=1),
            )
            return super().analyze(workitem, inputs)

    with performer(sqlite_live_server, OverDeadline(), ae="LATE") as p:
        assert p.run_once() == "CANCELED"
    ds = workitem(hub, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    assert ds[PROGRESS_INFO]["Value"][0][REASON]["Value"] == ["Run timeout passed"]
    assert sr_series(hub, study) == []


def test_progress_is_reported_step_by_step(sqlite_live_server: LiveServer, hub: httpx.Client):
    study = store_study(hub, per_series=3)
    uid = create_workitem(hub, study)
    seen: list[tuple[int, str]] = []

    class Recording(Performer):
        def report_progress(self, claimed: Any, percent: int, description: str) -> None:
            super().report_progress(claimed, percent, description)
            progress = workitem(hub, claimed.uid)[PROGRESS_INFO]["Value"][0]
            assert [float(v) for v in progress["00741004"]["Value"]] == [percent]
            seen.append((percent, description))

    with Recording(sqlite_live_server.dicomweb, PRODUCT, "PROGRESS", ReferenceAnalyzer()) as p:
        assert p.run_once() == "COMPLETED"
    assert [d for _p, d in seen] == [
        "Retrieved 3/3 input instance(s)",
        "Analysing 3 input instance(s)",
        "Storing 1 result(s)",
    ]
    percents = [p for p, _d in seen]
    assert percents == sorted(percents) and percents[-1] < 100
    assert workitem_state(hub, uid) == "COMPLETED"


# -- against a hub with authentication on (issue 6) ---------------------------------------------


def test_performer_with_credentials_works_a_secured_hub_over_tokens(tmp_path: Path) -> None:
    """`aifi performer run --credentials FILE` against a hub with the built-in authorization
    server: private_key_jwt tokens on every request, the event channel's WebSocket handshake
    included (the run loop is woken by the event of a new workitem, not by polling)."""
    with secured_hub(tmp_path / "data") as server:
        hospital = register(
            server,
            role="hospital",
            scopes=("dicomweb.read", "dicomweb.write", "worklist.requester"),
        )
        mine = register(server, role="performer", products=(PRODUCT,), method="private_key_jwt")
        file = tmp_path / "performer.json"
        file.write_text(mine.to_json())
        requester = ClientCredentials(
            hospital, ("dicomweb.read", "dicomweb.write", "worklist.requester")
        )
        with httpx.Client(
            base_url=server.dicomweb, headers=JSON, timeout=30, auth=requester
        ) as hub:
            uid = create_workitem(hub, store_study(hub))
            root = typer.Typer()
            root.add_typer(vendors_app, name="performer")
            args = ["performer", "run", "--hub", server.dicomweb, "--product", PRODUCT]
            refused = CliRunner().invoke(root, [*args, "--once"])
            assert refused.exit_code != 0  # no token: the hub answers 401
            result = CliRunner().invoke(root, [*args, "--once", "--credentials", str(file)])
            assert result.exit_code == 0, result.output
            assert workitem(hub, uid)[STATE]["Value"] == ["COMPLETED"]
            # Triggered Pull: the loop subscribes and opens the event channel with its token
            # (a refused WebSocket handshake leaves no channel, and the loop would poll only
            # every 60 s: the second workitem is done well before that).
            auth = performer_auth(Credentials.from_file(file))
            with Performer(
                server.dicomweb, PRODUCT, "SECURED", ReferenceAnalyzer(), auth=auth
            ) as p:
                stop = threading.Event()
                done: list[int] = []
                thread = threading.Thread(
                    target=lambda: done.append(p.run(stop, max_items=1, poll_seconds=60))
                )
                thread.start()
                wait_until(lambda: p._channel is not None, 10, "the event channel to open")
                second = create_workitem(hub, store_study(hub))
                thread.join(timeout=30)
                stop.set()
                assert done == [1]
            assert workitem(hub, second)[STATE]["Value"] == ["COMPLETED"]
