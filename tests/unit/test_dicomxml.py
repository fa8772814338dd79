"""DICOM JSON → Native DICOM Model XML (PS3.19 A.1): well-formed, and parses back."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pydicom import Dataset
from pydicom.sequence import Sequence

from aifi.dicomweb.dicomjson import dataset_to_metadata
from aifi.dicomweb.dicomxml import (
    NATIVE_DICOM_NAMESPACE,
    json_list_to_native_xml,
    json_to_native_xml,
)

NS = {"n": NATIVE_DICOM_NAMESPACE}
XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"


def parse(document: bytes) -> ET.Element:
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(document)


def attribute(root: ET.Element, tag: str) -> ET.Element:
    found = root.find(f"n:DicomAttribute[@tag='{tag}']", NS)
    assert found is not None, tag
    return found


def test_root_element_namespace_and_space() -> None:
    root = parse(json_to_native_xml({}))
    assert root.tag == f"{{{NATIVE_DICOM_NAMESPACE}}}NativeDicomModel"
    assert root.get(XML_SPACE) == "preserve"
    assert list(root) == []


def test_values_are_numbered_with_tag_vr_keyword() -> None:
    root = parse(
        json_to_native_xml(
            {
                "00080060": {"vr": "CS", "Value": ["CT"]},
                "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]},
                "00280030": {"vr": "DS", "Value": [0.5, 0.25]},
                "00200013": {"vr": "IS", "Value": [7]},
                "00100030": {"vr": "DA"},
            }
        )
    )
    image_type = attribute(root, "00080008")
    assert image_type.attrib == {"tag": "00080008", "vr": "CS", "keyword": "ImageType"}
    values = image_type.findall("n:Value", NS)
    assert [(v.get("number"), v.text) for v in values] == [("1", "ORIGINAL"), ("2", "PRIMARY")]
    spacing = [v.text for v in attribute(root, "00280030").findall("n:Value", NS)]
    assert spacing == ["0.5", "0.25"]
    assert attribute(root, "00200013").find("n:Value", NS).text == "7"  # type: ignore[union-attr]
    assert list(attribute(root, "00100030")) == []  # empty attribute: no Value
    # Attributes in ascending tag order, as in a binary data set.
    assert [a.get("tag") for a in root] == sorted(a.get("tag") or "" for a in root)


def test_person_name_components_and_groups() -> None:
    root = parse(
        json_to_native_xml(
            {
                "00100010": {
                    "vr": "PN",
                    "Value": [
                        {
                            "Alphabetic": "Yamada^Tarou^^Dr",
                            "Ideographic": "山田^太郎",
                            "Phonetic": "やまだ^たろう",
                        },
                        {"Alphabetic": "Müller"},
                    ],
                }
            }
        )
    )
    names = attribute(root, "00100010").findall("n:PersonName", NS)
    assert [n.get("number") for n in names] == ["1", "2"]
    alphabetic = names[0].find("n:Alphabetic", NS)
    assert alphabetic is not None
    assert [(c.tag.split("}")[1], c.text) for c in alphabetic] == [
        ("FamilyName", "Yamada"),
        ("GivenName", "Tarou"),
        ("NamePrefix", "Dr"),
    ]
    assert names[0].findtext("n:Ideographic/n:FamilyName", namespaces=NS) == "山田"
    assert names[0].findtext("n:Phonetic/n:GivenName", namespaces=NS) == "たろう"
    assert names[1].findtext("n:Alphabetic/n:FamilyName", namespaces=NS) == "Müller"
    assert names[1].find("n:Ideographic", NS) is None


def test_sequences_nest_items() -> None:
    root = parse(
        json_to_native_xml(
            {
                "00400275": {
                    "vr": "SQ",
                    "Value": [
                        {"00401001": {"vr": "SH", "Value": ["RP1"]}},
                        {
                            "00401001": {"vr": "SH", "Value": ["RP2"]},
                            "00321064": {
                                "vr": "SQ",
                                "Value": [{"00080100": {"vr": "SH", "Value": ["X"]}}],
                            },
                        },
                    ],
                },
                "00081115": {"vr": "SQ"},
            }
        )
    )
    items = attribute(root, "00400275").findall("n:Item", NS)
    assert [i.get("number") for i in items] == ["1", "2"]
    assert items[0].findtext("n:DicomAttribute[@tag='00401001']/n:Value", namespaces=NS) == "RP1"
    nested = items[1].find("n:DicomAttribute[@tag='00321064']/n:Item/n:DicomAttribute", NS)
    assert nested is not None and nested.get("keyword") == "CodeValue"
    assert list(attribute(root, "00081115")) == []


def test_bulk_data_and_inline_binary() -> None:
    root = parse(
        json_to_native_xml(
            {
                "7FE00010": {"vr": "OW", "BulkDataURI": "http://h/x/bulkdata/7FE00010?a=1&b=2"},
                "00420011": {"vr": "OB", "InlineBinary": "AAEC"},
            }
        )
    )
    bulk = attribute(root, "7FE00010").find("n:BulkData", NS)
    assert bulk is not None and bulk.get("uri") == "http://h/x/bulkdata/7FE00010?a=1&b=2"
    assert attribute(root, "00420011").findtext("n:InlineBinary", namespaces=NS) == "AAEC"


def test_private_attributes_have_creator_and_no_keyword() -> None:
    root = parse(
        json_to_native_xml(
            {
                "00091010": {"vr": "LO", "Value": ["secret sauce"]},
                "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
            }
        )
    )
    private = attribute(root, "00091010")
    assert private.get("privateCreator") == "ACME 1.0"
    assert "keyword" not in private.attrib
    assert "privateCreator" not in attribute(root, "00090010").attrib


def test_markup_and_control_characters_stay_well_formed() -> None:
    document = json_to_native_xml(
        {
            "00081030": {"vr": "LO", "Value": ['<b>&"quoted"</b>']},
            "00204000": {"vr": "LT", "Value": ["bell\x07 and\r\nnewline"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "O'Brien<&>^Pat"}]},
        }
    )
    root = parse(document)
    assert attribute(root, "00081030").findtext("n:Value", namespaces=NS) == '<b>&"quoted"</b>'
    assert attribute(root, "00204000").findtext("n:Value", namespaces=NS) == (
        "bell\ufffd and\r\nnewline"
    )
    assert root.findtext(".//n:FamilyName", namespaces=NS) == "O'Brien<&>"


def test_from_a_real_dataset_round_trips_the_values() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P-1"
    ds.StudyInstanceUID = "1.2.3"
    ds.Rows = 512
    ds.RequestAttributesSequence = Sequence([Dataset()])
    ds.RequestAttributesSequence[0].RequestedProcedureID = "RP-9"
    root = parse(json_to_native_xml(dataset_to_metadata(ds)))
    assert attribute(root, "00100020").findtext("n:Value", namespaces=NS) == "P-1"
    assert attribute(root, "00280010").findtext("n:Value", namespaces=NS) == "512"
    assert attribute(root, "00280010").get("vr") == "US"
    assert root.findtext(".//n:PersonName/n:Alphabetic/n:GivenName", namespaces=NS) == "Jane"
    item = attribute(root, "00400275").find("n:Item[@number='1']", NS)
    assert item is not None
    assert item.findtext("n:DicomAttribute/n:Value", namespaces=NS) == "RP-9"


def test_list_gives_one_document_per_dataset() -> None:
    docs = json_list_to_native_xml([{}, {"00100020": {"vr": "LO", "Value": ["A"]}}])
    assert len(docs) == 2
    assert all(parse(d).tag.endswith("NativeDicomModel") for d in docs)
