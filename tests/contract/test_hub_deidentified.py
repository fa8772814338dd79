"""The hub's de-identification guard (issue 15, ``aifi.hub.store.deidentified``) against a real
uvicorn hub: with ``require_deidentified`` on, STOW-RS refuses each instance of a
hospital whose Patient Identity Removed (0012,0062) is not YES (Failed SOP Sequence,
Failure Reason C411, a Warning saying why; PS3.18 §10.5.3) and stores the rest; nothing
already stored is touched; ``aifi tenants set`` changes it while the hub runs; an AI
product's performer storing its result into the pseudonymised study is not checked."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from starlette.requests import HTTPConnection
from typer.testing import CliRunner

from aifi.cli import app as cli
from aifi.conformance.synthetic import radiograph_study
from aifi.hub.auth.clients import DEFAULT_SCOPES
from aifi.hub.settings import Settings
from aifi.principal import Principal
from tests.conftest import LiveServer, running_hub
from tests.contract.test_results import QUIET, fracture_report, rules_file
from tests.support.dicom import make_ct, multipart_related, to_bytes
from tests.support.ups import completion, element, state_change

JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
C411 = 0xC411
WHY = (
    "Patient Identity Removed (0012,0062) is not YES: this hospital's tenant accepts only "
    "de-identified instances (PS3.15 Annex E)"
)
PERFORMER = "X-Test-Performer"


def deidentified(ds: Dataset) -> Dataset:
    ds.PatientIdentityRemoved = "YES"
    return ds


def stow(client: httpx.Client, datasets: Sequence[Dataset]) -> httpx.Response:
    body, ctype = multipart_related(to_bytes(ds) for ds in datasets)
    return client.post(
        "/studies", content=body, headers={"Content-Type": ctype, "Accept": JSON["Accept"]}
    )


def failures(response: httpx.Response) -> dict[str, int]:
    items = response.json().get("00081198", {}).get("Value", [])
    return {i["00081155"]["Value"][0]: i["00081197"]["Value"][0] for i in items}


def stored(client: httpx.Client, ds: Dataset) -> bool:
    url = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/metadata"
    )
    return client.get(url).status_code == 200


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[LiveServer, httpx.Client]]:
    """A development-mode hub told to accept only de-identified instances."""
    settings = Settings(data_dir=tmp_path / "data", require_deidentified=True)
    with (
        running_hub(settings) as server,
        httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=30) as client,
    ):
        yield server, client


def test_identified_instances_are_refused_c411_and_the_others_stored(
    guarded: tuple[LiveServer, httpx.Client],
):
    _server, client = guarded
    study = str(generate_uid())
    plain = make_ct(study_uid=study)  # no (0012,0062) at all
    marked_no = make_ct(study_uid=study)
    marked_no.PatientIdentityRemoved = "NO"
    good = deidentified(make_ct(study_uid=study))
    response = stow(client, [plain, good, marked_no])
    assert response.status_code == 202  # PS3.18 §10.5.3: some stored, some failed
    assert failures(response) == {plain.SOPInstanceUID: C411, marked_no.SOPInstanceUID: C411}
    [referenced] = response.json()["00081199"]["Value"]
    assert referenced["00081155"]["Value"] == [good.SOPInstanceUID]
    warnings = response.headers.get_list("warning")
    assert len(warnings) == 2 and all(WHY in w and w.startswith("299 ") for w in warnings)
    assert stored(client, good)
    assert not stored(client, plain) and not stored(client, marked_no)

    refused = stow(client, [make_ct(study_uid=study)])
    assert refused.status_code == 409  # nothing stored
    assert list(failures(refused).values()) == [C411]


def test_the_tenant_setting_changes_from_the_cli_while_the_hub_runs_and_spares_stored_data(
    tmp_path: Path,
):
    data_dir = tmp_path / "data"
    folder = str(data_dir)
    runner = CliRunner()
    with (
        running_hub(Settings(data_dir=data_dir)) as server,  # development mode: default off
        httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=30) as client,
    ):
        earlier = make_ct()
        assert stow(client, [earlier]).status_code == 200

        result = runner.invoke(
            cli, ["tenants", "set", "default", "--require-deidentified", "--data-dir", folder]
        )
        assert result.exit_code == 0, result.output
        assert "default: de-identified only" in result.output
        listed = runner.invoke(cli, ["tenants", "list", "--data-dir", folder])
        assert "default: de-identified only" in listed.output

        again = stow(client, [earlier])  # the same bytes, already stored
        assert again.status_code == 409 and list(failures(again).values()) == [C411]
        assert stored(client, earlier)  # nothing already stored is touched
        retrieved = client.get(
            f"/studies/{earlier.StudyInstanceUID}", headers={"Accept": "multipart/related"}
        )
        assert retrieved.status_code == 200

        result = runner.invoke(
            cli, ["tenants", "set", "default", "--allow-identified", "--data-dir", folder]
        )
        assert result.exit_code == 0 and "default: identified allowed" in result.output
        assert stow(client, [make_ct()]).status_code == 200

        result = runner.invoke(
            cli, ["tenants", "set", "default", "--hub-default", "--data-dir", folder]
        )
        assert "default: identified allowed (hub default)" in result.output
        assert stow(client, [make_ct()]).status_code == 200


def test_the_tenants_cli_refuses_unclear_orders(tmp_path: Path):
    runner = CliRunner()
    folder = str(tmp_path / "data")
    nothing = runner.invoke(cli, ["tenants", "set", "default", "--data-dir", folder])
    assert nothing.exit_code == 2 and "--require-deidentified" in nothing.output
    bad = runner.invoke(cli, ["tenants", "set", "Not A Tenant", "--allow-identified"])
    assert bad.exit_code == 2 and "invalid tenant id" in bad.output
    created = runner.invoke(
        cli, ["tenants", "set", "ward-3", "--allow-identified", "--data-dir", folder]
    )
    assert created.exit_code == 0
    listed = runner.invoke(cli, ["tenants", "list", "--data-dir", folder])
    assert "ward-3: identified allowed" in listed.output


def test_the_default_is_on_outside_development_mode(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AIFI_REQUIRE_DEIDENTIFIED", raising=False)
    assert Settings(dev_mode=False).deidentified_by_default is True
    assert Settings(dev_mode=True).deidentified_by_default is False
    monkeypatch.setenv("AIFI_REQUIRE_DEIDENTIFIED", "false")
    assert Settings(dev_mode=False).deidentified_by_default is False
    monkeypatch.setenv("AIFI_REQUIRE_DEIDENTIFIED", "true")
    assert Settings(dev_mode=True).deidentified_by_default is True


# -- an AI product's results are not data from a hospital ---------------------------------------


def test_a_performers_result_in_a_pseudonymised_study_is_not_checked(tmp_path: Path):
    """A result object need not carry (0012,0062): the performer's result passes, while
    the same object from the hospital is refused."""
    settings = Settings(
        data_dir=tmp_path / "data",
        rules_file=rules_file(tmp_path, ["AIFI-FRACTURE"]),
        task_manager=False,
        require_deidentified=True,
    )
    with running_hub(settings) as server:
        hospital = Principal(
            tenant="default",
            subject="gateway",
            scopes=frozenset(DEFAULT_SCOPES["hospital"]),
            role="hospital",
        )

        def resolve(connection: HTTPConnection) -> Principal:
            product = connection.headers.get(PERFORMER)
            if not product:
                return hospital
            return Principal(
                tenant="default",
                subject=f"performer-{product}",
                scopes=frozenset({"dicomweb.read", "dicomweb.write", "worklist.performer"}),
                role="performer",
                products=frozenset({product}),
            )

        server.app.state.principal_resolver = resolve
        now = [datetime.now(UTC)]
        state = server.app.state
        state.hub.clock.set(lambda: now[0])
        with (
            httpx.Client(base_url=server.dicomweb, headers=JSON, timeout=30) as gateway,
            httpx.Client(
                base_url=server.dicomweb,
                headers={**JSON, PERFORMER: "AIFI-FRACTURE"},
                timeout=30,
            ) as performer,
            httpx.Client(base_url=server.url + "/api/v1", timeout=30) as api,
        ):
            study = [
                deidentified(pydicom.dcmread(io.BytesIO(data)))
                for data in radiograph_study(2, study_uid=str(generate_uid()))
            ]
            assert stow(gateway, study).status_code == 200
            now[0] = datetime.now(UTC) + timedelta(seconds=QUIET + 1)
            [uid] = state.hub.task_manager.tick().created
            txn = str(generate_uid())
            claimed = performer.put(
                f"/workitems/{uid}/state", json=state_change("IN PROGRESS", txn)
            )
            assert claimed.status_code == 200, claimed.headers.get("warning")

            report = fracture_report(study)
            # highdicom's SR copies (0012,0062) from the inputs; the GSPS/KOS/SC builders
            # copy selected patient attributes only: a result without it must pass too
            del report.PatientIdentityRemoved
            from_hospital = stow(gateway, [report])
            assert list(failures(from_hospital).values()) == [C411]
            assert stow(performer, [report]).status_code == 200

            body = completion(
                (
                    str(report.StudyInstanceUID),
                    str(report.SeriesInstanceUID),
                    str(report.SOPInstanceUID),
                )
            )
            [output] = body["00741216"]["Value"][0]["00404033"]["Value"]
            output["00081199"]["Value"][0]["00081150"] = element("UI", str(report.SOPClassUID))
            assert performer.post(f"/workitems/{uid}?transaction={txn}", json=body).is_success
            done = performer.put(f"/workitems/{uid}/state", json=state_change("COMPLETED", txn))
            assert done.status_code == 200, done.headers.get("warning")
            result = api.get(f"/results/{uid}").json()["result"]
            assert result["outcome"] == "positive"
