"""The AIW-I Task Manager end to end: studies stored over STOW-RS become workitems by the
routing rules, performers take them through UPS-RS, late instances, completion signals,
deadlines and restarts (IHE RAD TF AIW-I; PS3.4 Annex CC)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from aifi.conformance.synthetic import Patient, radiograph_study
from aifi.hub.orchestration.task_manager import TickReport
from aifi.hub.settings import Settings
from tests.conftest import LiveServer, running_hub
from tests.support.dicom import multipart_related
from tests.support.ups import completion, new_workitem, state_change
from tests.support.wait import returns_of, wait_until

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
BONE_AGE = "AIFI-BONEAGE"
QUIET = 0.4
GLOBAL = "1.2.840.10008.5.1.4.34.5"


def rules_file(tmp_path: Path, quiet: float = QUIET, **product_changes: Any) -> Path:
    """The shipped rules with short quiet periods (and product changes) for tests."""
    from importlib.resources import files

    config = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    config["quiet_period_seconds"] = dict.fromkeys(("DX", "CR", "CT", "MR", "default"), quiet)
    for product in config["products"]:
        product.update(product_changes)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def hub_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        rules_file=rules_file(tmp_path),
        task_manager_poll_seconds=0.02,
    )


@pytest.fixture
def hub(hub_settings: Settings) -> Iterator[LiveServer]:
    with running_hub(hub_settings, lifespan=True) as server:
        yield server


def stow(server: LiveServer, files: list[bytes]) -> None:
    body, content_type = multipart_related(files)
    response = httpx.post(
        server.dicomweb + "/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def workitems(server: LiveServer, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(server.dicomweb + "/workitems", params=query, headers=JSON, timeout=30)
    assert response.status_code == 200
    result: list[dict[str, Any]] = response.json()
    return result


def rounds(server: LiveServer) -> list[TickReport]:
    """The report of every Task Manager round of ``server`` from now on, once it is over."""
    return returns_of(server.app.state.hub.task_manager, "tick")


def routed_then_one_more(reports: list[TickReport]) -> bool:
    """A round routed a study, and another round ended after it."""
    return any(r.routed for r in reports[:-1])


def value(ds: dict[str, Any], tag: str) -> Any:
    return (ds.get(tag, {}).get("Value") or [None])[0]


def bone_age_items(server: LiveServer, study_uid: str) -> list[dict[str, Any]]:
    return workitems(
        server,
        StudyInstanceUID=study_uid,
        **{"ScheduledWorkitemCodeSequence.CodeValue": BONE_AGE},
    )


def hand(study_uid: str, images: int = 2, **kwargs: Any) -> list[bytes]:
    return list(radiograph_study(images, study_uid=study_uid, **kwargs))


def test_a_hand_study_becomes_one_bone_age_workitem_that_a_performer_completes(hub: LiveServer):
    study_uid = str(generate_uid())
    stow(hub, hand(study_uid))
    [item] = wait_until(lambda: bone_age_items(hub, study_uid))
    assert value(item, "00741000") == "SCHEDULED"
    assert value(item, "00404041") == "READY"
    assert value(item, "00741204") == "Skeletal age (bone age)"
    code = value(item, "00404018")
    assert (value(code, "00080100"), value(code, "00080102")) == (BONE_AGE, "99AIFI")
    [inputs] = item["00404021"]["Value"]
    assert len(inputs["00081199"]["Value"]) == 2
    retrieve_url = value(value(inputs, "0040E025"), "00081190")
    assert retrieve_url.startswith(hub.dicomweb + f"/studies/{study_uid}/series/")

    # Fracture detection also takes hand radiographs (its workitem may come a moment
    # after); no other product does.
    def codes() -> set[str]:
        found = workitems(hub, StudyInstanceUID=study_uid)
        return {value(value(w, "00404018"), "00080100") for w in found}

    wait_until(lambda: len(codes()) == 2, timeout=2)
    assert codes() == {BONE_AGE, "AIFI-FRACTURE"}

    # A performer (dicomweb-client for DICOMweb, httpx for UPS-RS) claims and works it.
    uid = value(item, "00080018")
    txn = str(generate_uid())
    ups = httpx.Client(base_url=hub.dicomweb, headers=JSON, timeout=30)
    assert (
        ups.put(f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn)).status_code == 200
    )
    client = DICOMwebClient(hub.dicomweb)
    series_uid = value(inputs, "0020000E")
    retrieved = client.retrieve_series(study_uid, series_uid)
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(
        value(r, "00081155") for r in inputs["00081199"]["Value"]
    )
    [result] = list(map(_read, radiograph_study(1, study_uid=study_uid, modality="OT")))
    result.SeriesDescription = "AI result"
    reports = rounds(hub)
    client.store_instances([result])
    output = (study_uid, str(result.SeriesInstanceUID), str(result.SOPInstanceUID))
    assert (
        ups.post(f"/workitems/{uid}?transaction={txn}", json=completion(output)).status_code == 200
    )
    assert (
        ups.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn)).status_code == 200
    )
    ups.close()
    client._session.close()

    # the result changed the study: routed again after its quiet period, nothing new
    wait_until(lambda: any(r.routed for r in reports), 5, "the study routed again")
    [done] = bone_age_items(hub, study_uid)
    assert value(done, "00741000") == "COMPLETED"
    outputs = done["00741216"]["Value"][0]["00404033"]["Value"]
    assert value(outputs[0]["00081199"]["Value"][0], "00081155") == output[2]


def _read(data: bytes) -> Any:
    import io

    import pydicom

    return pydicom.dcmread(io.BytesIO(data))


def test_instances_arriving_late_update_a_scheduled_workitem(hub: LiveServer):
    study_uid, series_uid = str(generate_uid()), str(generate_uid())
    stow(hub, hand(study_uid, 1, series_uid=series_uid))
    [item] = wait_until(lambda: bone_age_items(hub, study_uid))
    uid = value(item, "00080018")
    stow(hub, hand(study_uid, 1, series_uid=series_uid))
    # At once: the inputs are not complete any more ...
    wait_until(lambda: value(bone_age_items(hub, study_uid)[0], "00404041") == "INCOMPLETE", 2)
    # ... and after the quiet period the same workitem lists both instances, READY.
    wait_until(lambda: value(bone_age_items(hub, study_uid)[0], "00404041") == "READY", 5)
    [item] = bone_age_items(hub, study_uid)
    assert value(item, "00080018") == uid
    assert len(item["00404021"]["Value"][0]["00081199"]["Value"]) == 2


def test_instances_arriving_after_a_claim_get_a_new_workitem(hub: LiveServer):
    study_uid, series_uid = str(generate_uid()), str(generate_uid())
    stow(hub, hand(study_uid, 1, series_uid=series_uid))
    [item] = wait_until(lambda: bone_age_items(hub, study_uid))
    claimed = value(item, "00080018")
    response = httpx.put(
        f"{hub.dicomweb}/workitems/{claimed}/state",
        json=state_change("IN PROGRESS", str(generate_uid())),
        headers=JSON,
    )
    assert response.status_code == 200
    reports = rounds(hub)
    stow(hub, hand(study_uid, 1, series_uid=series_uid))

    def both() -> list[dict[str, Any]] | None:
        found = bone_age_items(hub, study_uid)
        return found if len(found) == 2 else None

    items = wait_until(both, 10, "a second bone-age workitem")
    newer = [w for w in items if value(w, "00080018") != claimed]
    assert value(newer[0], "00741000") == "SCHEDULED"
    assert len(newer[0]["00404021"]["Value"][0]["00081199"]["Value"]) == 2
    wait_until(partial(routed_then_one_more, reports), 5, "a round after the routing")
    assert len(bone_age_items(hub, study_uid)) == 2


def test_a_completion_signal_routes_before_the_quiet_period(tmp_path: Path):
    settings = Settings(
        data_dir=tmp_path / "data",
        rules_file=rules_file(tmp_path, quiet=60),
        task_manager_poll_seconds=0.02,
    )
    with running_hub(settings, lifespan=True) as server:
        study_uid = str(generate_uid())
        reports = rounds(server)
        stow(server, hand(study_uid))
        after = len(reports)  # the second round to end from here began after the store
        wait_until(lambda: len(reports) >= after + 2, 5, "two rounds that saw the study")
        assert bone_age_items(server, study_uid) == []
        signalled = time.monotonic()
        response = httpx.post(f"{server.url}/api/v1/studies/{study_uid}/complete")
        assert response.status_code == 202
        wait_until(lambda: bone_age_items(server, study_uid), timeout=2)
        assert time.monotonic() - signalled < 1.0
        missing = httpx.post(f"{server.url}/api/v1/studies/{generate_uid()}/complete")
        assert missing.status_code == 404
        explanation = httpx.get(f"{server.url}/api/v1/studies/{study_uid}/routing").text
        assert "AIFI-BONEAGE" in explanation and "MATCH" in explanation
        assert "AIFI-IPE" in explanation and "no match" in explanation


def test_an_adult_hand_gets_fracture_detection_but_no_bone_age(hub: LiveServer):
    study_uid = str(generate_uid())
    adult = Patient(name="Demo^Volwassen", patient_id="ADULT-1", birth_date="19700101")
    reports = rounds(hub)
    stow(hub, hand(study_uid, patient=adult))
    wait_until(lambda: workitems(hub, StudyInstanceUID=study_uid))
    # the round that routed the study is over: every product it matched has its workitem
    wait_until(lambda: any(r.routed for r in reports), 5, "the study's routing round to end")
    codes = [
        value(value(w, "00404018"), "00080100") for w in workitems(hub, StudyInstanceUID=study_uid)
    ]
    assert codes == ["AIFI-FRACTURE"]


@contextlib.contextmanager
def clocked_hub(
    tmp_path: Path, **product_changes: Any
) -> Iterator[tuple[LiveServer, list[datetime]]]:
    """A hub whose Task Manager does not run by itself: the test calls ``tick()`` and sets
    the clock (``now[0]``) that the Task Manager and the worklist read."""
    settings = Settings(
        data_dir=tmp_path / "data",
        rules_file=rules_file(tmp_path, **product_changes),
        task_manager=False,
    )
    with running_hub(settings) as server:
        now = [datetime.now(UTC)]
        server.app.state.hub.clock.set(lambda: now[0])
        yield server, now


def test_deadlines_cancel_and_retry_then_give_up(tmp_path: Path):
    """Driven with a clock of the test's own: claim timeout 1 min, two attempts."""
    with clocked_hub(tmp_path, claim_timeout_minutes=1, max_attempts=2) as (server, now):
        manager = server.app.state.hub.task_manager
        study_uid = str(generate_uid())
        stow(server, hand(study_uid))
        now[0] += timedelta(seconds=QUIET + 1)
        created = manager.tick().created
        assert len(created) == 2  # bone age + fracture
        first = next(
            u for u in created if value(value(_get(server, u), "00404018"), "00080100") == BONE_AGE
        )

        now[0] += timedelta(seconds=61)
        report = manager.tick()
        assert first in report.expired
        old = _get(server, first)
        assert value(old, "00741000") == "CANCELED"
        reason = value(old["00741002"]["Value"][0], "00741238")
        assert "Not claimed within 1 minutes" in reason and "retried" in reason
        [retry] = [
            w for w in bone_age_items(server, study_uid) if value(w, "00741000") == "SCHEDULED"
        ]
        assert value(retry["00741224"]["Value"][0], "00080018") == first  # Replaced Procedure Step

        now[0] += timedelta(seconds=61)
        manager.tick()
        states = sorted(value(w, "00741000") for w in bone_age_items(server, study_uid))
        assert states == ["CANCELED", "CANCELED"]
        last = next(w for w in bone_age_items(server, study_uid) if value(w, "00080018") != first)
        assert "no attempts left" in value(last["00741002"]["Value"][0], "00741238")


def _get(server: LiveServer, uid: str) -> dict[str, Any]:
    response = httpx.get(f"{server.dicomweb}/workitems/{uid}", headers=JSON)
    assert response.status_code == 200
    [ds] = response.json()
    assert isinstance(ds, dict)
    return ds


def test_a_restart_in_the_middle_loses_nothing(tmp_path: Path, hub_settings: Settings):
    study_uid = str(generate_uid())
    # 1. Stored, then the hub stops before the quiet period is over.
    quiet_settings = hub_settings.model_copy(update={"rules_file": rules_file(tmp_path, quiet=1.5)})
    with running_hub(quiet_settings, lifespan=True) as first:
        stow(first, hand(study_uid))
        assert bone_age_items(first, study_uid) == []
    # 2. After the restart the pending study is routed, and a performer claims it.
    with running_hub(quiet_settings, lifespan=True) as second:
        [item] = wait_until(lambda: bone_age_items(second, study_uid))
        uid, txn = value(item, "00080018"), str(generate_uid())
        response = httpx.put(
            f"{second.dicomweb}/workitems/{uid}/state",
            json=state_change("IN PROGRESS", txn),
            headers=JSON,
        )
        assert response.status_code == 200
    # 3. Another restart while it is IN PROGRESS: the claim, and only it, survives.
    with running_hub(quiet_settings, lifespan=True) as third:
        reports = rounds(third)
        # two whole rounds as the leader (the study's quiet period is long over): a routing
        # state lost in the restart would route the study again in the first of them
        wait_until(lambda: sum(r.leader for r in reports) >= 2, 10, "two rounds of the new hub")
        [item] = bone_age_items(third, study_uid)
        assert value(item, "00741000") == "IN PROGRESS"
        with httpx.Client(base_url=third.dicomweb, headers=JSON) as ups:
            done = ups.post(f"/workitems/{uid}?transaction={txn}", json=completion())
            assert done.status_code == 200
            final = ups.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn))
            assert final.status_code == 200
        assert len(bone_age_items(third, study_uid)) == 1


def test_rules_explain_on_the_command_line(tmp_path: Path):
    from typer.testing import CliRunner

    from aifi.cli import app

    settings = Settings(data_dir=tmp_path / "data", task_manager=False)
    study_uid = str(generate_uid())
    with running_hub(settings) as server:
        stow(server, hand(study_uid, description="Rö hand links", body_part="HANDL"))
    runner = CliRunner()
    result = runner.invoke(
        app, ["rules", "explain", study_uid, "--data-dir", str(tmp_path / "data")]
    )
    assert result.exit_code == 0, result.output
    assert "AIFI-BONEAGE" in result.output and "MATCH" in result.output
    assert "HANDL" in result.output  # the value seen, normalised
    assert "FAIL  modality in CT" in result.output
    missing = runner.invoke(
        app, ["rules", "explain", "1.2.3", "--data-dir", str(tmp_path / "data")]
    )
    assert missing.exit_code == 2
    checked = runner.invoke(app, ["rules", "check"])
    assert checked.exit_code == 0 and "AIFI-IPE" in checked.output


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_routing_and_late_instances_on_both_databases(backend: str, tmp_path: Path):
    from tests.conftest import database_for

    with database_for(backend) as url:
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=url,
            rules_file=rules_file(tmp_path),
            task_manager_poll_seconds=0.02,
        )
        with running_hub(settings, lifespan=True) as server:
            study_uid, series_uid = str(generate_uid()), str(generate_uid())
            stow(server, hand(study_uid, 1, series_uid=series_uid))
            [item] = wait_until(lambda: bone_age_items(server, study_uid))
            stow(server, hand(study_uid, 1, series_uid=series_uid))
            wait_until(
                lambda: value(bone_age_items(server, study_uid)[0], "00404041") == "INCOMPLETE", 2
            )
            wait_until(
                lambda: value(bone_age_items(server, study_uid)[0], "00404041") == "READY", 5
            )
            [again] = bone_age_items(server, study_uid)
            assert value(again, "00080018") == value(item, "00080018")
            assert len(again["00404021"]["Value"][0]["00081199"]["Value"]) == 2


def test_a_claimed_workitem_not_finished_in_time_is_ended_and_retried(tmp_path: Path):
    """Run timeout 2 min: the performer went quiet; its late completion is refused."""
    with clocked_hub(tmp_path, run_timeout_minutes=2, max_attempts=3) as (server, now):
        manager = server.app.state.hub.task_manager
        study_uid = str(generate_uid())
        stow(server, hand(study_uid))
        now[0] += timedelta(seconds=QUIET + 1)
        manager.tick()
        [item] = bone_age_items(server, study_uid)
        uid, txn = value(item, "00080018"), str(generate_uid())
        with httpx.Client(base_url=server.dicomweb, headers=JSON) as ups:
            assert (
                ups.put(
                    f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn)
                ).status_code
                == 200
            )
            now[0] += timedelta(minutes=1)
            assert manager.tick().expired == []  # still within its run time
            now[0] += timedelta(minutes=1, seconds=1)
            assert manager.tick().expired == [uid]
            ended = _get(server, uid)
            assert value(ended, "00741000") == "CANCELED"
            reason = value(ended["00741002"]["Value"][0], "00741238")
            assert "Not completed within 2 minutes" in reason and "attempt 1 of 3" in reason
            late = ups.post(f"/workitems/{uid}?transaction={txn}", json=completion())
            assert late.status_code == 400  # PS3.18 §11.6.2: update of a final workitem
        retry = [
            w for w in bone_age_items(server, study_uid) if value(w, "00741000") == "SCHEDULED"
        ]
        assert len(retry) == 1 and value(retry[0]["00741224"]["Value"][0], "00080018") == uid


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_two_worker_processes_route_each_study_once(backend: str, tmp_path: Path):
    """`aifi serve --workers 2 --rules ...`: both processes run a Task Manager, one leads
    (lease row); the rules reach both workers."""
    from aifi.hub.serve import serve_subprocess
    from tests.conftest import database_for

    with (
        database_for(backend) as url,
        serve_subprocess(
            tmp_path / "data",
            tmp_path / "hub.log",
            workers=2,
            database_url=url,
            rules_file=rules_file(tmp_path),
        ) as (_process, base),
    ):
        server = LiveServer(url=base, app=None)  # type: ignore[arg-type]
        studies = [str(generate_uid()) for _ in range(4)]
        for study_uid in studies:
            stow(server, hand(study_uid))
        for study_uid in studies:
            wait_until(partial(bone_age_items, server, study_uid), timeout=3)
        # A negative check across two processes: a second workitem must not appear. The
        # worker that does not lead leaves no trace of its rounds to wait on, so time has to
        # pass: a quiet period and many polls of both Task Managers.
        time.sleep(QUIET + 0.5)
        for study_uid in studies:
            assert len(bone_age_items(server, study_uid)) == 1


def test_delivered_event_reports_are_removed_after_a_week(tmp_path: Path):
    with clocked_hub(tmp_path) as (server, now):
        manager = server.app.state.hub.task_manager
        worklist = server.app.state.worklist
        with httpx.Client(base_url=server.dicomweb, headers=JSON) as ups:
            assert ups.post(f"/workitems/{GLOBAL}/subscribers/KEEPER").status_code == 201
            for _ in range(3):
                created = ups.post("/workitems", json=new_workitem())
                assert created.status_code == 201
        events = worklist.pending_events("default", "KEEPER", 0)
        assert len(events) == 3
        worklist.mark_delivered("default", [e.id for e in events[:2]])
        assert manager.tick().purged == 0  # delivered just now
        now[0] += timedelta(days=8)
        assert manager.tick().purged == 2  # the undelivered one stays
        assert [e.id for e in worklist.pending_events("default", "KEEPER", 0)] == [events[2].id]
