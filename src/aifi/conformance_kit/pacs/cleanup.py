"""``cleanup`` (with ``--cleanup``): remove what the kit stored, where the PACS allows it by a
standard service. Never a vendor's own API: the kit tests the standard interfaces only.

* DICOMweb: PS3.18 defines no Delete transaction — the Studies Service has Retrieve, Store
  and Search (§10.3, Table 10.3-1) — but some origin servers answer ``DELETE`` on the study
  resource. The kit sends it once; a success is checked with a search; any refusal
  (404, 405, 501, …) means the PACS offers no delete: the case is skipped with the study to
  remove by hand.
* DIMSE: the Storage Service Class (PS3.4 Annex B) only stores, and no DIMSE service removes
  stored instances (IHE IOCM's rejection notes ask an archive to hide them, a workflow of
  its own): skipped, with the study to remove by hand.

Optional: how a PACS cleans up says nothing about whether AI results reach it.
"""

from __future__ import annotations

import time

import httpx

from aifi.conformance_kit.pacs.cases import POLL_INTERVAL
from aifi.conformance_kit.pacs.dicomweb import delete_study
from aifi.conformance_kit.pacs.objects import KitStudy
from aifi.conformance_kit.pacs.services import STUDY_KEYS, Finder, Uids
from aifi.conformance_kit.report import Case, Report
from aifi.errors import UpstreamError

CITES = ["DICOM PS3.18 §10.3 (Table 10.3-1)", "DICOM PS3.4 Annex B"]
NO_STANDARD_DELETE = (
    "PS3.18 defines no Delete transaction (the Studies Service has Retrieve, Store and Search"
    " only, §10.3 Table 10.3-1)"
)


def _by_hand(study: KitStudy) -> str:
    return f"remove study {study.study_uid} (patient {study.patient_id}) with the PACS's own tools"


def _case(report: Report) -> Case:
    return report.case(
        "cleanup", "What the kit stored is removed again", cites=CITES, required=False
    )


def cleanup_dicomweb(
    report: Report, client: httpx.Client, finder: Finder, study: KitStudy, wait_seconds: float
) -> None:
    case = _case(report)
    with case.timed():
        try:
            response = delete_study(client, study.study_uid)
        except UpstreamError as exc:
            case.skipped(f"the PACS did not answer DELETE: {exc}; {_by_hand(study)}")
            return
        evidence = {"request": f"DELETE studies/{study.study_uid}", "status": response.status_code}
        if not response.is_success:
            case.skipped(
                f"the PACS offers no standard delete: {NO_STANDARD_DELETE}; DELETE on the study"
                f" answered HTTP {response.status_code}; {_by_hand(study)}",
                **evidence,
            )
            return
        if _still_found(finder, study, wait_seconds):
            case.warned(
                f"DELETE answered HTTP {response.status_code} but the study is still found;"
                f" {_by_hand(study)}",
                **evidence,
            )
            return
        case.passed(
            f"DELETE on the study answered HTTP {response.status_code} and it is gone"
            f" (an extension: {NO_STANDARD_DELETE})",
            **evidence,
        )


def _still_found(finder: Finder, study: KitStudy, wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    while finder.find(Uids(study.study_uid), STUDY_KEYS):
        if time.monotonic() >= deadline:
            return True
        time.sleep(POLL_INTERVAL)
    return False


def cleanup_dimse(report: Report, study: KitStudy) -> None:
    _case(report).skipped(
        "the PACS offers no standard delete: no DIMSE service removes stored instances (the"
        f" Storage Service Class, PS3.4 Annex B, only stores); {_by_hand(study)}"
    )
