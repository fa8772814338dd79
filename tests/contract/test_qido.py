"""QIDO-RS (PS3.18 §10.6) against the real app over HTTP, on SQLite and on PostgreSQL.

The corpus is loaded straight into the store (no STOW-RS), once per database backend: the
tests only read, so one real uvicorn server per backend (built with the same helpers as
the ``live_server`` fixture) keeps the module fast.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import BasicTextSRStorage, generate_uid

from aifi.dicomweb.dicomxml import NATIVE_DICOM_NAMESPACE
from aifi.hub.app import create_app
from aifi.hub.settings import Settings
from tests.conftest import LiveServer, postgres_available, postgres_database, run_live_server
from tests.support.dicom import ingest, make_ct

JSON = "application/dicom+json"
XML_ACCEPT = 'multipart/related; type="application/dicom+xml"'


@dataclass
class Corpus:
    """Three studies of the default tenant (and one of tenant "other")."""

    a: str
    """Müller^Ärne, CT (2 series: CT × 2 instances, SR × 1), 20240110 08:30."""
    a_ct: str
    a_sr: str
    b: str
    """Brown^Bob, CT × 1, 20240112 23:30, accession ACC_B%1."""
    b_ct: str
    c: str
    """Yamada^Tarou=山田^太郎, MR × 2, 20240113 (no time), accession ACC%C."""
    c_mr: str
    other: str
    """Tenant "other": Müller^Ärne again."""
    sops: dict[str, list[str]]
    """SOP Instance UIDs per series, in arrival order."""


def _instance(study: str, series: str, **kwargs: Any) -> Dataset:
    return make_ct(study_uid=study, series_uid=series, rows=4, columns=4, **kwargs)


def _sr(ds: Dataset) -> Dataset:
    ds.SOPClassUID = BasicTextSRStorage
    ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    return ds


def load(server: LiveServer) -> Corpus:
    store = server.app.state.dicom_store
    a, a_ct, a_sr, b, b_ct, c, c_mr = (str(generate_uid()) for _ in range(7))
    a_common = dict(
        patient_name="Müller^Ärne",
        patient_id="P-A",
        study_date="20240110",
        study_time="083000",
        accession="ACC-A",
        charset="ISO_IR 192",
    )
    study_a = [
        _instance(a, a_ct, instance_number=1, series_number=1, **a_common),
        _instance(a, a_ct, instance_number=2, series_number=1, **a_common),
        _sr(_instance(a, a_sr, instance_number=1, series_number=2, modality="SR", **a_common)),
    ]
    study_b = [
        _instance(
            b,
            b_ct,
            patient_name="Brown^Bob",
            patient_id="P-B",
            study_date="20240112",
            study_time="233000",
            accession="ACC_B%1",
        )
    ]
    study_c = []
    for n in (1, 2):
        ds = _instance(
            c,
            c_mr,
            patient_name="Yamada^Tarou=山田^太郎",
            patient_id="P-C",
            study_date="20240113",
            accession="ACC%C",
            modality="MR",
            instance_number=n,
            charset="ISO_IR 192",
        )
        del ds.StudyTime
        ds.ReferringPhysicianName = "Smith^Jane"
        ds.PerformedProcedureStepStartDate = "20240113"
        ds.PerformedProcedureStepStartTime = "0915"
        items = []
        for rp, sps in (("RP1", "SPS1"), ("RP2", "SPS2")):
            item = Dataset()
            item.RequestedProcedureID = rp
            item.ScheduledProcedureStepID = sps
            items.append(item)
        ds.RequestAttributesSequence = Sequence(items)
        study_c.append(ds)
    for datasets in (study_a, study_b, study_c):
        ingest(store, datasets)
    other = str(generate_uid())
    store.ensure_tenant("other")
    ingest(store, [_instance(other, generate_uid(), **a_common)], tenant="other")
    sops = {
        a_ct: [str(d.SOPInstanceUID) for d in study_a[:2]],
        a_sr: [str(study_a[2].SOPInstanceUID)],
        b_ct: [str(study_b[0].SOPInstanceUID)],
        c_mr: [str(d.SOPInstanceUID) for d in study_c],
    }
    return Corpus(a, a_ct, a_sr, b, b_ct, c, c_mr, other, sops)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Corpus]]:
    """A real server with the corpus loaded, on SQLite and on PostgreSQL (like conftest's
    ``database_url``: PostgreSQL is skipped with the reason when absent, except in CI)."""
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            reason = postgres_available()
            if reason:
                if os.environ.get("CI") and not os.environ.get("AIFI_ALLOW_PG_SKIP"):
                    pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
                pytest.skip(reason)
            url = stack.enter_context(postgres_database())
        data = tmp_path_factory.mktemp("qido") / "data"
        app = create_app(Settings(data_dir=data, database_url=url, fsync=False))
        stack.callback(app.state.hub.close)
        server = stack.enter_context(run_live_server(app))
        yield server, load(server)


@pytest.fixture
def live_server(served: tuple[LiveServer, Corpus]) -> LiveServer:
    return served[0]


@pytest.fixture
def corpus(served: tuple[LiveServer, Corpus]) -> Corpus:
    return served[1]


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.dicomweb, timeout=30) as c:
        yield c


def get(client: httpx.Client, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    response = client.get(url, **kwargs)
    assert response.status_code == 200, (url, response.status_code, response.text)
    assert response.headers["content-type"] == JSON
    result: list[dict[str, Any]] = response.json()
    return result


def values(result: dict[str, Any], tag: str) -> list[Any]:
    return list(result.get(tag, {}).get("Value", []))


def first(result: dict[str, Any], tag: str) -> Any:
    found = values(result, tag)
    return found[0] if found else None


def uids(results: list[dict[str, Any]], tag: str = "0020000D") -> list[str]:
    return [first(r, tag) for r in results]


def study_uids(client: httpx.Client, query: str) -> set[str]:
    return set(uids(get(client, "/studies?" + query)))


# -- resources -----------------------------------------------------------------------------


def test_six_resources_with_default_attributes_and_retrieve_urls(
    client: httpx.Client, corpus: Corpus, live_server: LiveServer
) -> None:
    base = live_server.dicomweb
    studies = get(client, "/studies")
    assert uids(studies) == [corpus.a, corpus.b, corpus.c]  # stable order; no other tenant
    study_a = studies[0]
    assert first(study_a, "00081190") == f"{base}/studies/{corpus.a}"
    assert first(study_a, "00100010") == {"Alphabetic": "Müller^Ärne"}
    for tag in ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090"):
        assert tag in study_a, tag
    for tag in ("00100020", "00100030", "00100040", "0020000D", "00200010"):
        assert tag in study_a, tag
    assert values(study_a, "00080005") == ["ISO_IR 192"]
    assert study_a["00080030"]["vr"] == "TM"
    assert studies[2]["00080030"] == {"vr": "TM"}  # required key without a value: empty

    series = get(client, "/series")
    assert uids(series, "0020000E") == [corpus.a_ct, corpus.a_sr, corpus.b_ct, corpus.c_mr]
    assert "00100010" in series[0]  # no study in the path: study attributes too
    assert first(series[0], "00081190") == f"{base}/studies/{corpus.a}/series/{corpus.a_ct}"

    in_study = get(client, f"/studies/{corpus.a}/series")
    assert uids(in_study, "0020000E") == [corpus.a_ct, corpus.a_sr]
    assert "00100010" not in in_study[0]  # the study is known from the path
    assert first(in_study[0], "0020000D") == corpus.a  # …but its unique key is kept
    assert values(in_study[0], "00080060") == ["CT"]
    assert values(in_study[0], "00200011") == [1]
    assert values(in_study[0], "00201209") == [2]

    instances = get(client, "/instances")
    assert len(instances) == 6
    assert "00100010" in instances[0] and "00080060" in instances[0]

    study_instances = get(client, f"/studies/{corpus.a}/instances")
    assert uids(study_instances, "00080018") == corpus.sops[corpus.a_ct] + corpus.sops[corpus.a_sr]
    assert "00100010" not in study_instances[0]
    assert "00080060" in study_instances[0]  # series attributes: the series is not in the path

    series_instances = get(client, f"/studies/{corpus.a}/series/{corpus.a_ct}/instances")
    assert uids(series_instances, "00080018") == corpus.sops[corpus.a_ct]
    one = series_instances[0]
    assert "00080060" not in one
    assert first(one, "0020000E") == corpus.a_ct
    assert first(one, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
    assert values(one, "00200013") == [1]
    assert values(one, "00280010") == [4] and values(one, "00280011") == [4]
    assert values(one, "00280100") == [16]
    assert first(one, "00081190") == (
        f"{base}/studies/{corpus.a}/series/{corpus.a_ct}/instances/{corpus.sops[corpus.a_ct][0]}"
    )
    # A study or series that does not exist (for this tenant) has no matches.
    assert get(client, f"/studies/{corpus.other}/series") == []
    assert get(client, f"/studies/{corpus.c}/series/{corpus.a_ct}/instances") == []


def test_computed_attributes(client: httpx.Client, corpus: Corpus) -> None:
    [study] = get(client, f"/studies?StudyInstanceUID={corpus.a}&includefield=SOPClassesInStudy")
    assert values(study, "00080061") == ["CT", "SR"]
    assert values(study, "00201206") == [2]
    assert values(study, "00201208") == [3]
    assert values(study, "00080062") == ["1.2.840.10008.5.1.4.1.1.2", BasicTextSRStorage]
    assert study["00201208"]["vr"] == "IS"
    counts = {first(s, "0020000E"): values(s, "00201209") for s in get(client, "/series")}
    assert counts[corpus.a_ct] == [2] and counts[corpus.a_sr] == [1]
    assert study_uids(client, "NumberOfStudyRelatedInstances=3") == {corpus.a}
    assert study_uids(client, "NumberOfStudyRelatedSeries=1") == {corpus.b, corpus.c}
    assert study_uids(client, "ModalitiesInStudy=SR") == {corpus.a}
    assert study_uids(client, "ModalitiesInStudy=CT") == {corpus.a, corpus.b}
    assert study_uids(client, "ModalitiesInStudy=MR,SR") == {corpus.a, corpus.c}
    assert study_uids(client, "ModalitiesInStudy=M*") == {corpus.c}
    assert study_uids(client, f"SOPClassesInStudy={BasicTextSRStorage}") == {corpus.a}
    assert study_uids(client, "InstanceAvailability=ONLINE") == {corpus.a, corpus.b, corpus.c}
    assert get(client, f"/studies/{corpus.a}/instances?InstanceAvailability=OFFLINE") == []


# -- matching keys --------------------------------------------------------------------------


def test_every_study_level_key(client: httpx.Client, corpus: Corpus) -> None:
    a, b, c = corpus.a, corpus.b, corpus.c
    assert study_uids(client, "StudyDate=20240112") == {b}
    assert study_uids(client, "StudyTime=083000") == {a}
    assert study_uids(client, "AccessionNumber=ACC-A") == {a}
    assert study_uids(client, "ModalitiesInStudy=MR") == {c}
    assert study_uids(client, "ReferringPhysicianName=Smith%5EJane") == {c}
    assert study_uids(client, "ReferringPhysicianName=ref%5Edoctor") == {a, b}
    assert study_uids(client, "PatientName=Brown%5EBob") == {b}
    assert study_uids(client, "PatientID=P-C") == {c}
    assert study_uids(client, f"StudyInstanceUID={b}") == {b}
    assert study_uids(client, "StudyID=1") == {a, b, c}
    assert study_uids(client, "StudyID=2") == set()
    assert study_uids(client, "StudyDescription=Synthetic*") == {a, b, c}
    assert study_uids(client, "PatientBirthDate=19700101") == {a, b, c}  # from stored JSON
    assert study_uids(client, "PatientSex=M") == set()
    # Keys by tag, and several keys at once (all must match).
    assert study_uids(client, "00100020=P-A&00080020=20240110") == {a}
    assert study_uids(client, "PatientID=P-A&StudyDate=20240112") == set()


def test_every_series_level_key(client: httpx.Client, corpus: Corpus) -> None:
    def series_uids(query: str) -> set[str]:
        return set(uids(get(client, "/series?" + query), "0020000E"))

    assert series_uids("Modality=SR") == {corpus.a_sr}
    assert series_uids("Modality=CT,MR") == series_uids("") - {corpus.a_sr}
    assert series_uids(f"SeriesInstanceUID={corpus.c_mr}") == {corpus.c_mr}
    assert series_uids("SeriesNumber=2") == {corpus.a_sr}
    assert series_uids("PerformedProcedureStepStartDate=20240101-") == {corpus.c_mr}
    assert series_uids("PerformedProcedureStepStartTime=09-10") == {corpus.c_mr}
    assert series_uids("RequestAttributesSequence.RequestedProcedureID=RP2") == {corpus.c_mr}
    assert series_uids("00400275.00401001=RP1&00400275.00400009=SPS1") == {corpus.c_mr}
    assert series_uids("00400275.00401001=RP1&00400275.00400009=SPS2") == set()
    assert series_uids("PatientID=P-A") == {corpus.a_ct, corpus.a_sr}  # a study-level key
    [mr] = get(client, f"/studies/{corpus.c}/series?RequestAttributesSequence=")
    items = values(mr, "00400275")
    assert [first(i, "00401001") for i in items] == ["RP1", "RP2"]
    assert values(mr, "00400244") == ["20240113"]


def test_every_instance_level_key(client: httpx.Client, corpus: Corpus) -> None:
    def sop_uids(url: str) -> list[str]:
        return uids(get(client, url), "00080018")

    a_ct = corpus.sops[corpus.a_ct]
    assert sop_uids(f"/instances?SOPInstanceUID={a_ct[1]}") == [a_ct[1]]
    assert sop_uids(f"/instances?SOPClassUID={BasicTextSRStorage}") == corpus.sops[corpus.a_sr]
    assert sop_uids(f"/studies/{corpus.a}/instances?InstanceNumber=2") == [a_ct[1]]
    assert sop_uids(f"/studies/{corpus.c}/instances?Modality=MR") == corpus.sops[corpus.c_mr]
    assert sop_uids("/instances?ImageType=ORIGINAL") == sop_uids("/instances")  # any value
    assert sop_uids("/instances?Rows=4&PatientName=yamada*") == corpus.sops[corpus.c_mr]
    # Keys the index does not hold, at three levels at once (matched on the stored JSON).
    mixed = "/instances?PatientSex=O&PerformedProcedureStepStartTime=0915&ImageType=ORIGINAL"
    assert sop_uids(mixed) == corpus.sops[corpus.c_mr]
    assert sop_uids("/instances?PatientSex=F&ImageType=ORIGINAL") == []


def test_wildcards_case_and_escaping(client: httpx.Client, corpus: Corpus) -> None:
    # Percent-encoded by the client, decoded by the server: BRO%2A means BRO*.
    assert study_uids(client, "PatientName=BRO%2A") == {corpus.b}
    assert study_uids(client, "PatientName=br?wn*") == {corpus.b}
    assert study_uids(client, "PatientName=*bob") == {corpus.b}
    assert study_uids(client, "PatientName=yamada%5Etarou") == {corpus.c}  # alphabetic group
    assert study_uids(client, "PatientName=Yamada%5ETarou%3D山田%5E太郎") == {corpus.c}
    assert study_uids(client, "PatientName=*") == {corpus.a, corpus.b, corpus.c}
    assert study_uids(client, "PatientID=p-a") == set()  # not a name: case-sensitive
    assert study_uids(client, "PatientID=P-?") == {corpus.a, corpus.b, corpus.c}
    # % and _ are ordinary characters, not SQL wildcards.
    assert study_uids(client, "AccessionNumber=ACC%25*") == {corpus.c}
    assert study_uids(client, "AccessionNumber=ACC_*") == {corpus.b}
    assert study_uids(client, "AccessionNumber=ACC_B%251") == {corpus.b}
    assert study_uids(client, "AccessionNumber=ACC?B*") == {corpus.b}
    assert study_uids(client, "AccessionNumber=ACC*") == {corpus.a, corpus.b, corpus.c}


def test_date_time_ranges(client: httpx.Client, corpus: Corpus) -> None:
    a, b, c = corpus.a, corpus.b, corpus.c
    assert study_uids(client, "StudyDate=20240110-20240112") == {a, b}
    assert study_uids(client, "StudyDate=20240111-") == {b, c}
    assert study_uids(client, "StudyDate=-20240110") == {a}
    assert study_uids(client, "StudyTime=2300-") == {b}
    assert study_uids(client, "StudyTime=0830") == {a}  # 08:30:00-08:30:59
    assert study_uids(client, "StudyTime=0000-") == {a, b}  # c has no time: no match
    # Combined date-time: from 12 Jan 22:00 to 13 Jan 06:00 (PS3.4 C.2.2.2.5.1).
    assert study_uids(client, "StudyDate=20240112-20240113&StudyTime=2200-0600") == {b, c}
    assert study_uids(client, "StudyDate=20240110-20240112&StudyTime=0900-2300") == set()
    assert study_uids(client, "StudyDate=20240110-&StudyTime=0800-") == {a, b, c}
    assert study_uids(client, "StudyDate=-20240112&StudyTime=-0830") == {a}


def test_uid_lists(client: httpx.Client, corpus: Corpus) -> None:
    assert study_uids(client, f"StudyInstanceUID={corpus.a},{corpus.c}") == {corpus.a, corpus.c}
    assert study_uids(client, f"StudyInstanceUID={corpus.b}%5C{corpus.other}") == {corpus.b}
    listed = ",".join(corpus.sops[corpus.a_ct] + corpus.sops[corpus.c_mr][:1])
    found = uids(get(client, f"/instances?SOPInstanceUID={listed}"), "00080018")
    assert found == corpus.sops[corpus.a_ct] + corpus.sops[corpus.c_mr][:1]


def test_fuzzy_matching_of_person_names(client: httpx.Client, corpus: Corpus) -> None:
    def fuzzy(value: str) -> set[str]:
        return study_uids(client, f"PatientName={value}&fuzzymatching=true")

    assert fuzzy("muller") == {corpus.a}  # Müller, without the accent
    assert fuzzy("MÜLLER") == {corpus.a}
    assert fuzzy("arne") == {corpus.a}  # any name component
    assert fuzzy("muller%5Earne") == {corpus.a}
    assert fuzzy("tar") == {corpus.c}
    assert fuzzy("m?ller") == {corpus.a}
    assert fuzzy("nobody") == set()
    assert study_uids(client, "PatientName=muller") == set()  # literal matching
    assert study_uids(client, "ReferringPhysicianName=jane&fuzzymatching=true") == {corpus.c}
    response = client.get("/studies?PatientName=muller&PatientID=P-A&fuzzymatching=true")
    assert response.status_code == 200
    assert "literal matching was performed for PatientID" in response.headers["warning"]
    assert "Warning" not in client.get("/studies?PatientName=mul&fuzzymatching=true").headers


# -- returned attributes ----------------------------------------------------------------------


def test_includefield(client: httpx.Client, corpus: Corpus, live_server: LiveServer) -> None:
    url = f"/studies?StudyInstanceUID={corpus.a}"
    [plain] = get(client, url)
    assert "00081030" not in plain
    [one] = get(client, url + "&includefield=StudyDescription")
    assert values(one, "00081030") == ["Synthetic study"]
    [more] = get(client, url + "&includefield=00081030,00100030&includefield=InstitutionName")
    assert values(more, "00081030") == ["Synthetic study"]
    assert values(more, "00100030") == ["19700101"]
    assert more["00080080"] == {"vr": "LO"}  # asked for, not present: returned empty
    [lower] = get(client, url + "&includefield=Modality,SOPInstanceUID")
    assert "00080060" not in lower and "00080018" not in lower  # deeper levels never
    [everything] = get(client, url + "&includefield=all")
    assert values(everything, "00081030") == ["Synthetic study"]
    assert "00080062" in everything and "00100040" in everything

    sop = corpus.sops[corpus.a_ct][0]
    base = f"/studies/{corpus.a}/series/{corpus.a_ct}/instances"
    [image] = get(client, f"{base}?SOPInstanceUID={sop}&includefield=ImageType,00180060")
    assert values(image, "00080008") == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert values(image, "00180060") == [120]  # KVP
    [full] = get(client, f"{base}?SOPInstanceUID={sop}&includefield=all")
    assert values(full, "00280030") == [0.5, 0.5]
    instance_url = f"{live_server.dicomweb}{base}/{sop}"
    assert full["7FE00010"]["BulkDataURI"] == f"{instance_url}/bulkdata/7FE00010"


def test_limit_offset_and_the_additional_results_warning(
    client: httpx.Client, corpus: Corpus, live_server: LiveServer
) -> None:
    service = live_server.dicomweb
    everything = uids(get(client, "/instances"), "00080018")
    pages = []
    for offset in range(0, 6, 2):
        response = client.get(f"/instances?limit=2&offset={offset}")
        assert response.status_code == 200
        pages += uids(response.json(), "00080018")
        left = 6 - offset - 2
        if left:
            assert response.headers.get_list("warning") == [
                f"299 {service}: There are {left} additional results that can be requested"
            ]
        else:
            assert "warning" not in response.headers
    assert pages == everything  # stable order, no duplicates, nothing lost
    assert get(client, "/instances?offset=6") == []
    assert get(client, "/instances?offset=100&limit=1") == []
    response = client.get("/studies?PatientID=P-?&limit=1&offset=1")
    assert uids(response.json()) == [corpus.b]
    assert "There are 1 additional results" in response.headers["warning"]


def test_limit_above_the_maximum_is_lowered_and_said(
    client: httpx.Client, corpus: Corpus, live_server: LiveServer
) -> None:
    config = live_server.app.state.dicomweb_config
    try:
        live_server.app.state.dicomweb_config = dataclasses.replace(config, qido_max_limit=2)
        response = client.get("/instances?limit=5")
        assert response.status_code == 200
        assert len(response.json()) == 2
        warnings = response.headers.get_list("warning")
        assert any("The limit 5 exceeds the maximum of 2" in w for w in warnings)
        assert any("There are 4 additional results" in w for w in warnings)
        assert len(get(client, "/studies?limit=5&offset=2")) == 1
        live_server.app.state.dicomweb_config = dataclasses.replace(config, qido_max_offset=10)
        response = client.get("/instances?offset=11")
        assert response.status_code == 400
        assert "offset 11 exceeds the maximum of 10" in response.headers["warning"]
    finally:
        live_server.app.state.dicomweb_config = config


def test_no_match_is_200_with_an_empty_list(client: httpx.Client, corpus: Corpus) -> None:
    response = client.get("/studies?PatientID=NOBODY")
    assert (response.status_code, response.json()) == (200, [])
    assert response.headers["content-type"] == JSON
    response = client.get("/studies?PatientID=NOBODY", headers={"Accept": XML_ACCEPT})
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith(XML_ACCEPT)
    # No part at all: the body is the close delimiter alone.
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    assert response.content == f"--{boundary}--\r\n".encode()


def test_tenant_isolation(client: httpx.Client, corpus: Corpus, live_server: LiveServer) -> None:
    # tenant "other" holds its study (Müller^Ärne, P-A, like study a of the default tenant) ...
    store = live_server.app.state.dicom_store
    assert len(store.find_instances("other", corpus.other)) == 1
    # ... which the same searches that find the default tenant's never show
    assert study_uids(client, "PatientID=P-A") == {corpus.a}
    assert study_uids(client, f"StudyInstanceUID={corpus.other}") == set()
    assert get(client, f"/studies/{corpus.other}/instances") == []
    everywhere = uids(get(client, "/instances"), "0020000D")
    assert corpus.a in everywhere and corpus.other not in everywhere


# -- media types and errors ---------------------------------------------------------------


def _xml_parts(response: httpx.Response) -> list[ET.Element]:
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = message_from_bytes(head + response.content)
    assert message.is_multipart()
    parts = message.get_payload()
    assert isinstance(parts, list)
    roots = []
    for part in parts:
        assert isinstance(part, Message)
        assert part.get_content_type() == "application/dicom+xml"
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        roots.append(ET.fromstring(payload))
    return roots


def test_xml_results_one_part_each(client: httpx.Client, corpus: Corpus) -> None:
    response = client.get("/studies", headers={"Accept": XML_ACCEPT})
    assert response.status_code == 200
    roots = _xml_parts(response)
    assert len(roots) == 3
    ns = {"n": NATIVE_DICOM_NAMESPACE}
    found = [r.findtext("n:DicomAttribute[@tag='0020000D']/n:Value", namespaces=ns) for r in roots]
    assert found == [corpus.a, corpus.b, corpus.c]
    name = "n:DicomAttribute[@tag='00100010']/n:PersonName/n:Alphabetic/n:FamilyName"
    assert roots[0].findtext(name, namespaces=ns) == "Müller"
    url = roots[0].find("n:DicomAttribute[@tag='00081190']", ns)
    assert url is not None and url.get("keyword") == "RetrieveURL"
    # The accept query parameter (PS3.18 §8.3.3.1) overrides the header.
    by_param = client.get("/series", params={"accept": XML_ACCEPT})
    assert by_param.headers["content-type"].startswith(XML_ACCEPT)


def test_json_for_json_and_wildcards(client: httpx.Client, corpus: Corpus) -> None:
    for accept in (None, "*/*", "application/json", JSON, "application/*", "text/html, */*;q=0.1"):
        headers = {"Accept": accept} if accept else {}
        response = client.get("/studies?limit=1", headers=headers)
        assert response.status_code == 200, accept
        assert response.headers["content-type"] == JSON, accept


def test_unacceptable_media_types_get_406(client: httpx.Client, corpus: Corpus) -> None:
    for accept in (
        "application/dicom",
        "text/html",
        'multipart/related; type="application/dicom"',
        "application/dicom+xml",
        "application/dicom+json;q=0",
    ):
        response = client.get("/studies", headers={"Accept": accept})
        assert response.status_code == 406, accept
        assert response.headers["warning"].startswith("299 ")


BAD_QUERIES = [
    "/studies?Nonsense=1",
    "/studies?0010002G=1",
    "/studies?StudyDate=yesterday",
    "/studies?StudyDate=20240201-20240101",
    "/studies?PatientID=A&PatientID=B",
    "/studies?limit=-5",
    "/studies?limit=ten",
    "/studies?offset=1.5",
    "/studies?fuzzymatching=maybe",
    "/studies?includefield=Nonsense",
    "/studies?Modality=CT",
    "/series?SOPInstanceUID=1.2.3",
    "/studies?StudyInstanceUID=1.2.3.abc",
    "/studies/1.2.3.abc/series",
    "/studies/1.2.3/series?StudyInstanceUID=1.2.3",
    "/studies?Accept=text/plain%3Bq%3Dbad",
]


def test_bad_queries_get_400_with_a_reason(client: httpx.Client) -> None:
    for url in BAD_QUERIES:
        response = client.get(url)
        assert response.status_code == 400, url
        warning = response.headers["warning"]
        assert warning.startswith("299 ") and len(warning) > 30, (url, warning)
