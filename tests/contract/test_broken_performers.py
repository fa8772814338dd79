"""The deliberately broken performers (tests/support/broken_performer.py) misbehave as
intended against a real hub with authentication on, each seen at the hub: the workitem's
state (PS3.4 Annex CC), the hub's refusals (STOW-RS failures of the IHE AIR result gate,
PS3.18 §10.5.3; UPS-RS statuses, §11.7), the AI result it records and its audit trail (the
requests as the kit's hub sees them). And the push product (tests/support/push_product.py)
answers IHE AIR results for a pilot study through the real push adapter, or 500 when failing.

Each broken performer runs as its own process, as the kit runs a vendor's command:
``python -m tests.support.broken_performer FLAW --hub … --credentials …``, stopped by SIGTERM.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydicom import Dataset
from sqlmodel import col, select

from aifi.conformance.pilot_studies import hand_xray
from aifi.hub.audit.rows import records
from aifi.hub.persistence.tables import AiResult, AuditRecord, ResultProblem
from aifi.ihe_profiles import air
from aifi.vendors.performer import AnalysisFailed, part10
from aifi.vendors.products import PRODUCTS
from aifi.vendors.push import PushAnalyzer
from tests.conftest import LiveServer, running_hub
from tests.support.auth import auth_settings, client_for, register
from tests.support.dicom import multipart_related
from tests.support.push_product import FAILURE_TEXT, running_push_product
from tests.support.ups import element
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
PRODUCT, OTHER = "AIFI-BONEAGE", "AIFI-FRACTURE"
REQUESTER = ("dicomweb.read", "dicomweb.write", "worklist.requester")
JSON = {"Content-Type": "application/dicom+json", "Accept": "application/dicom+json"}
STATE, PROGRESS_INFO, REASON = "00741000", "00741002", "00741238"
PERFORMED, OUTPUT = "00741216", "00404033"
STATE_PATH = "/dicomweb/workitems/{workitem}/state"


def rules_file(tmp_path: Path) -> Path:
    """The shipped rules, a hand radiograph routed at once (0.2 s quiet period) to the
    bone-age and the fracture product."""
    config = yaml.safe_load(files("aifi.ihe_profiles").joinpath("default_rules.yaml").read_text())
    config["quiet_period_seconds"] = dict.fromkeys(("DX", "CR", "CT", "MR", "default"), 0.2)
    config["tenants"] = {"default": [PRODUCT, OTHER]}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Scene:
    """A secured hub with a routed hand study: one workitem per product, a performer
    client for :data:`PRODUCT` (its credentials file) and the hospital's client."""

    server: LiveServer
    hub: httpx.Client
    credentials: Path
    performer_id: str
    study: list[Dataset]
    workitems: dict[str, str]

    def workitem(self, code: str = PRODUCT) -> dict[str, Any]:
        [ds] = self.hub.get(f"/workitems/{self.workitems[code]}").json()
        return dict(ds)

    def state(self, code: str = PRODUCT) -> str:
        return str(self.workitem(code)[STATE]["Value"][0])

    def reason(self) -> str:
        return str(self.workitem()[PROGRESS_INFO]["Value"][0][REASON]["Value"][0])

    def requests(self) -> list[AuditRecord]:
        """The performer's requests as the hub's audit trail has them, oldest first."""
        rows = records(self.server.app.state.hub.db)
        return [r for r in rows if r.client_id == self.performer_id]

    def result_series(self) -> list[Any]:
        """The study's series that are not the inputs' (the results stored into it)."""
        study = self.study[0]
        found = self.hub.get(f"/studies/{study.StudyInstanceUID}/series").json()
        return [s for s in found if s["0020000E"]["Value"][0] != str(study.SeriesInstanceUID)]

    def rows(self, table: Any) -> list[Any]:
        uid = self.workitems[PRODUCT]
        with self.server.app.state.hub.db.read() as session:
            return list(session.exec(select(table).where(col(table.workitem_uid) == uid)).all())


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    settings = auth_settings(tmp_path / "data", rules_file=rules_file(tmp_path), task_manager=False)
    with running_hub(settings) as server:
        hospital = register(server, role="hospital", scopes=REQUESTER)
        performer = register(
            server, role="performer", products=(PRODUCT,), method="private_key_jwt"
        )
        credentials = tmp_path / "performer.json"
        credentials.write_text(performer.to_json())
        with client_for(hospital, REQUESTER, base_url=server.dicomweb, headers=JSON) as hub:
            study = hand_xray(age_years=11.5)
            body, ctype = multipart_related(part10(ds) for ds in study)
            stored = hub.post("/studies", content=body, headers={"Content-Type": ctype})
            assert stored.status_code == 200, stored.text
            manager = server.app.state.hub.task_manager
            created = wait_until(lambda: manager.tick().created, 10, "the study to be routed")
            workitems = {}
            for uid in created:
                [ds] = hub.get(f"/workitems/{uid}").json()
                workitems[ds["00404018"]["Value"][0]["00080100"]["Value"][0]] = uid
            assert set(workitems) == {PRODUCT, OTHER}
            yield Scene(server, hub, credentials, performer.client_id, study, workitems)


@contextmanager
def broken(scene: Scene, flaw: str, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """The broken performer as its own process; stopped (SIGTERM) and its exit checked."""
    args = ["--hub", scene.server.dicomweb, "--credentials", str(scene.credentials)]
    command = [sys.executable, "-m", "tests.support.broken_performer", flaw, *args, *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            code = process.wait(timeout=15)
    assert code == 0, log.read_text()


def final_state(scene: Scene) -> str:
    def final() -> str | None:
        state = scene.state()
        return state if state in ("COMPLETED", "CANCELED") else None

    return wait_until(final, 20, lambda: f"a final state (now {scene.state()})")


def stows(scene: Scene) -> list[AuditRecord]:
    """The performer's STOW-RS requests (the audit row is written just after the answer)."""
    return [r for r in scene.requests() if r.method == "POST" and r.subtype == "STOW-RS"]


def refused_stow(scene: Scene) -> AuditRecord:
    [stow] = wait_until(lambda: stows(scene), 10, "the audit row of the STOW-RS")
    return stow


def no_algorithm_id(scene: Scene) -> None:
    assert final_state(scene) == "CANCELED"
    assert "HTTP 409" in scene.reason() and "algorithm is not identified" in scene.reason()
    assert refused_stow(scene).http_status == 409
    problems = [p.problem for p in scene.rows(ResultProblem)]
    assert len(problems) == 2 and all(air.validation.RULE_ALGORITHM in p for p in problems)
    assert "[A900]" in scene.reason()
    assert scene.result_series() == []


def wrong_study(scene: Scene) -> None:
    assert final_state(scene) == "CANCELED"
    assert "HTTP 409" in scene.reason() and "[0124]" in scene.reason()
    assert refused_stow(scene).http_status == 409
    assert scene.result_series() == []


def no_outputs(scene: Scene) -> None:
    assert final_state(scene) == "COMPLETED"
    performed = scene.workitem()[PERFORMED]["Value"][0]
    assert OUTPUT in performed and not performed[OUTPUT].get("Value")
    assert stows(scene) == []  # nothing stored, nothing tried
    assert scene.result_series() == []
    [result] = scene.rows(AiResult)
    assert (result.outcome, result.reason) == ("failed", "no result objects")


def ignores_cancel(scene: Scene) -> None:
    wait_until(lambda: scene.state() == "IN PROGRESS", 20, "the claim")
    uid = scene.workitems[PRODUCT]
    body = {REASON: element("LT", "Ordered in error")}
    assert scene.hub.post(f"/workitems/{uid}/cancelrequest", json=body).status_code == 202
    assert final_state(scene) == "COMPLETED"
    assert len(scene.result_series()) == 2  # SR and the summary page, stored anyway
    [result] = scene.rows(AiResult)
    assert result.outcome == "measured"


def no_transaction_uid(scene: Scene) -> None:
    def claims_retried() -> list[AuditRecord] | None:
        claims = [r for r in scene.requests() if r.method == "PUT" and r.path == STATE_PATH]
        return claims if len(claims) >= 3 else None

    claims = wait_until(claims_retried, 20, "three claims (two retries)")
    assert {r.http_status for r in claims} == {400}
    assert scene.state() == "SCHEDULED"


def other_product(scene: Scene) -> None:
    # Its own product's workitem, found only by the unfiltered search, is claimed and done.
    assert final_state(scene) == "COMPLETED"
    searches = [r.query or "" for r in scene.requests() if r.interaction == "search"]
    assert any(f"CodeValue={OTHER}" in q for q in searches), searches
    assert "ProcedureStepState=SCHEDULED" in searches, searches  # no product filter
    # The hub never showed it the other product's workitem: still SCHEDULED.
    assert scene.state(OTHER) == "SCHEDULED"
    assert not [r for r in scene.requests() if r.http_status == 404]


FLAWS: dict[str, tuple[Callable[[Scene], None], tuple[str, ...]]] = {
    "no-algorithm-id": (no_algorithm_id, ()),
    "wrong-study": (wrong_study, ()),
    "no-outputs": (no_outputs, ()),
    "ignores-cancel": (ignores_cancel, ("--hold", "2")),
    "no-transaction-uid": (no_transaction_uid, ("--poll", "0.3")),
    "other-product": (other_product, ("--other", OTHER, "--poll", "0.3")),
}


@pytest.mark.parametrize("flaw", FLAWS)
def test_a_broken_performer_misbehaves_visibly_at_the_hub(
    scene: Scene, flaw: str, tmp_path: Path
) -> None:
    check, extra = FLAWS[flaw]
    log = tmp_path / "performer.log"
    with broken(scene, flaw, log, *extra):
        try:
            check(scene)
        except AssertionError:
            print(log.read_text())  # the performer's side, shown by pytest on failure
            raise


def test_the_push_product_answers_results_or_500() -> None:
    study = hand_xray(age_years=9.0)
    product = PRODUCTS["skeletal-age"]
    workitem = {
        "00080018": element("UI", "2.25.1234"),
        "00404018": element("SQ", {"00080100": element("SH", product.code)}),
    }
    with running_push_product(product.code) as push, PushAnalyzer(push.url) as adapter:
        results = adapter.analyze(workitem, study)
        assert push.count == 1
        [request] = push.requests
        assert (request.workitem_uid, request.product, request.instances) == (
            "2.25.1234",
            product.code,
            1,
        )
        assert request.status == 200
    context = air.InputContext.from_datasets(study)
    assert sorted(str(r.Modality) for r in results) == ["OT", "SR"]
    for result in results:
        assert air.validate(result, context) == []
        assert air.AlgorithmIdentity.from_dataset(result) == product.algorithm
    with (
        running_push_product(product.code, fail=True) as push,
        PushAnalyzer(push.url, backoff=0.01) as adapter,
        pytest.raises(AnalysisFailed, match="HTTP 500") as failed,
    ):
        adapter.analyze(workitem, study)
    assert FAILURE_TEXT in failed.value.reason
    assert [r.status for r in push.requests] == [500]  # 500 is not retried
